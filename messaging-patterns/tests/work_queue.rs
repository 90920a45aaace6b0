//! Work queues against the real broker: delivery, retries with their count and delay,
//! dead-lettering, batches, poison messages, the consumer-timeout warning, shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use amqp_client::{BasicProperties, Connection, FieldValue, ShortStr};
use bytes::Bytes;
use common::{connect, depth, prefix, within};
use messaging_patterns::codec::{Json, Raw};
use messaging_patterns::work_queue::{
    BatchOptions, JobError, LAST_ERROR_HEADER, QueueType, RETRY_COUNT_HEADER, RetryPolicy,
    WorkQueue, WorkQueueOptions, WorkerEvent, WorkerOptions,
};
use tokio::sync::mpsc;

fn options(tag: &str, max_retries: u32, delays: &[u64]) -> WorkQueueOptions {
    WorkQueueOptions {
        prefix: prefix(tag),
        retry: RetryPolicy {
            max_retries,
            delays: delays.iter().map(|ms| Duration::from_millis(*ms)).collect(),
        },
        ..Default::default()
    }
}

/// Takes the one message of the dead-letter queue.
async fn take_dead(conn: &Connection, queue: &str) -> (Bytes, BasicProperties) {
    let channel = conn.open_channel().await.unwrap();
    let got = within(10, "a dead letter", async {
        loop {
            if let Some(got) = channel.get(queue, true).await.unwrap() {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    channel.close().await.unwrap();
    let delivery = got.delivery;
    (delivery.body, delivery.properties)
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a FieldValue> {
    props.headers.as_ref()?.get(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_jobs_are_handled_concurrently_and_acked() {
    let conn = connect().await;
    let opts = options("ok", 0, &[]);
    let queue = WorkQueue::declare(&conn, "jobs", Json::<u32>::new(), opts.clone())
        .await
        .unwrap();
    // Declaring again is idempotent.
    WorkQueue::declare(&conn, "jobs", Json::<u32>::new(), opts)
        .await
        .unwrap();
    for n in 0..40 {
        queue.push(&n).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let worker = queue
        .worker(
            WorkerOptions {
                concurrency: 4,
                ..Default::default()
            },
            move |job| {
                let (tx, r, p) = (tx.clone(), r.clone(), p.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    assert_eq!(job.retry_count, 0);
                    assert_eq!(
                        job.properties.content_type.as_ref().unwrap(),
                        "application/json"
                    );
                    tx.send(job.payload).unwrap();
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 40 {
        seen.push(within(20, "40 jobs", rx.recv()).await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..40).collect::<Vec<_>>());
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 1 && peak <= 4, "peak concurrency {peak}");
    worker.shutdown().await.unwrap();
    assert_eq!(depth(&conn, &queue.names().queue).await, 0);
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_jobs_are_retried_with_count_and_delay_then_dead_lettered() {
    let conn = connect().await;
    let queue = WorkQueue::declare(
        &conn,
        "retry",
        Json::<String>::new(),
        options("retry", 2, &[300, 700]),
    )
    .await
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = queue
        .worker(WorkerOptions::default(), move |job| {
            let tx = tx.clone();
            async move {
                tx.send((job.retry_count, Instant::now())).unwrap();
                Err(JobError::retry(format!("boom {}", job.retry_count)))
            }
        })
        .await
        .unwrap();
    let mut events = worker.events();
    queue.push(&"flaky".to_owned()).await.unwrap();
    let mut attempts = Vec::new();
    for _ in 0..3 {
        attempts.push(within(10, "an attempt", rx.recv()).await.unwrap());
    }
    assert_eq!(attempts.iter().map(|a| a.0).collect::<Vec<_>>(), [0, 1, 2]);
    let first_gap = attempts[1].1 - attempts[0].1;
    let second_gap = attempts[2].1 - attempts[1].1;
    assert!(first_gap >= Duration::from_millis(280), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(680), "{second_gap:?}");
    assert!(second_gap < Duration::from_secs(5), "{second_gap:?}");

    let (body, props) = take_dead(&conn, &queue.names().dead).await;
    assert_eq!(&body[..], b"\"flaky\"");
    assert_eq!(
        header(&props, RETRY_COUNT_HEADER).and_then(FieldValue::as_i64),
        Some(2)
    );
    assert_eq!(
        header(&props, LAST_ERROR_HEADER).and_then(FieldValue::as_str),
        Some("boom 2")
    );
    assert!(props.is_persistent());

    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(events.recv().await.unwrap());
    }
    assert!(
        matches!(&seen[0], WorkerEvent::Retried { retry: 1, delay, .. } if *delay == Duration::from_millis(300))
    );
    assert!(
        matches!(&seen[1], WorkerEvent::Retried { retry: 2, delay, .. } if *delay == Duration::from_millis(700))
    );
    assert!(matches!(&seen[2], WorkerEvent::DeadLettered { reason } if reason == "boom 2"));
    assert!(rx.try_recv().is_err(), "no attempt after the last retry");
    worker.shutdown().await.unwrap();
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_and_unreadable_content_go_straight_to_the_dead_letter_queue() {
    let conn = connect().await;
    let queue = WorkQueue::declare(
        &conn,
        "fatal",
        Json::<String>::new(),
        options("fatal", 5, &[]),
    )
    .await
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let worker = queue
        .worker(WorkerOptions::default(), move |job| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Err(JobError::fatal(format!("bad input {}", job.payload))) }
        })
        .await
        .unwrap();
    queue.push(&"x".to_owned()).await.unwrap();
    let (_, props) = take_dead(&conn, &queue.names().dead).await;
    assert_eq!(
        header(&props, LAST_ERROR_HEADER).and_then(FieldValue::as_str),
        Some("bad input x")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let xml = BasicProperties {
        content_type: Some(ShortStr::from_static("text/xml")),
        ..Default::default()
    };
    queue
        .push_raw(Bytes::from_static(b"<job/>"), xml)
        .await
        .unwrap();
    let (body, props) = take_dead(&conn, &queue.names().dead).await;
    assert_eq!(&body[..], b"<job/>");
    let error = header(&props, LAST_ERROR_HEADER)
        .and_then(FieldValue::as_str)
        .unwrap();
    assert!(
        error.starts_with("unreadable message: content type \"text/xml\""),
        "{error}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler never saw it");
    worker.shutdown().await.unwrap();
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_retried() {
    let conn = connect().await;
    let queue = WorkQueue::declare(&conn, "panic", Raw, options("panic", 1, &[]))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = queue
        .worker(WorkerOptions::default(), move |job| {
            let tx = tx.clone();
            async move {
                if job.retry_count == 0 {
                    panic!("first attempt explodes");
                }
                tx.send(job.properties.headers.clone()).unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    queue.push(&Bytes::from_static(b"job")).await.unwrap();
    let headers = within(10, "the retry", rx.recv()).await.unwrap().unwrap();
    assert_eq!(
        headers.get(LAST_ERROR_HEADER).and_then(FieldValue::as_str),
        Some("handler panicked: first attempt explodes")
    );
    worker.shutdown().await.unwrap();
    assert_eq!(depth(&conn, &queue.names().queue).await, 0);
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_and_a_failed_batch_is_retried_job_by_job() {
    let conn = connect().await;
    let queue = WorkQueue::declare(&conn, "batch", Json::<u32>::new(), options("batch", 1, &[]))
        .await
        .unwrap();
    for n in 0..25 {
        queue.push(&n).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let failed_once = Arc::new(AtomicU32::new(0));
    let options = BatchOptions {
        max_size: 10,
        max_wait: Duration::from_millis(300),
        ..Default::default()
    };
    let worker = queue
        .batch_worker(options, move |jobs| {
            let (tx, failed_once) = (tx.clone(), failed_once.clone());
            async move {
                if failed_once.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(JobError::retry("first batch fails"));
                }
                let batch: Vec<(u32, u32)> =
                    jobs.iter().map(|j| (j.payload, j.retry_count)).collect();
                tx.send(batch).unwrap();
                Ok(())
            }
        })
        .await
        .unwrap();
    let mut done = Vec::new();
    while done.len() < 25 {
        let batch = within(20, "the batches", rx.recv()).await.unwrap();
        assert!(
            !batch.is_empty() && batch.len() <= 10,
            "batch of {}",
            batch.len()
        );
        done.extend(batch);
    }
    let retried = done.iter().filter(|(_, r)| *r == 1).count();
    assert_eq!(
        retried, 10,
        "the first batch of 10 came back with x-retry-count 1"
    );
    let mut jobs: Vec<u32> = done.iter().map(|(n, _)| *n).collect();
    jobs.sort_unstable();
    assert_eq!(jobs, (0..25).collect::<Vec<_>>());
    worker.shutdown().await.unwrap();
    assert_eq!(
        depth(&conn, &queue.names().queue).await,
        0,
        "one multiple ack settled each batch"
    );
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_that_crashes_its_worker_is_dead_lettered_on_a_quorum_queue() {
    let conn = connect().await;
    let opts = WorkQueueOptions {
        queue_type: QueueType::Quorum,
        ..options("poison", 5, &[])
    };
    let queue = WorkQueue::declare(&conn, "poison", Raw, opts)
        .await
        .unwrap();
    queue.push(&Bytes::from_static(b"poison")).await.unwrap();
    let worker_options = WorkerOptions {
        poison_limit: Some(2),
        ..Default::default()
    };
    // Two workers take the job and "crash" (their connection dies) while it runs forever.
    for crash in 0..2u32 {
        let worker_conn = connect().await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let worker = queue_on(&worker_conn, &queue)
            .await
            .worker(worker_options.clone(), move |job| {
                tx.send(job.delivery_count).unwrap();
                async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                }
            })
            .await
            .unwrap();
        assert_eq!(
            within(10, "the poison job", rx.recv()).await.unwrap(),
            crash
        );
        worker_conn.close().await.unwrap();
        drop(worker);
    }
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let worker = queue
        .worker(worker_options, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .await
        .unwrap();
    let (body, props) = take_dead(&conn, &queue.names().dead).await;
    assert_eq!(&body[..], b"poison");
    let error = header(&props, LAST_ERROR_HEADER)
        .and_then(FieldValue::as_str)
        .unwrap();
    assert!(
        error.starts_with("poison message: delivered 2 times"),
        "{error}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler never ran it again"
    );
    worker.shutdown().await.unwrap();
    queue.delete().await.unwrap();
}

/// The same work queue, declared again on another connection.
async fn queue_on(conn: &Connection, queue: &WorkQueue<Raw>) -> WorkQueue<Raw> {
    let name = queue.names().queue.clone();
    let opts = WorkQueueOptions {
        queue_type: QueueType::Quorum,
        retry: RetryPolicy {
            max_retries: 5,
            delays: vec![],
        },
        ..Default::default()
    };
    WorkQueue::declare(conn, &name, Raw, opts).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_nearing_the_consumer_timeout_is_reported() {
    let conn = connect().await;
    let queue = WorkQueue::declare(&conn, "slow", Raw, options("slow", 0, &[]))
        .await
        .unwrap();
    let worker = queue
        .worker(
            WorkerOptions {
                consumer_timeout: Duration::from_millis(500),
                ..Default::default()
            },
            |_| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                Ok(())
            },
        )
        .await
        .unwrap();
    let mut events = worker.events();
    queue.push(&Bytes::from_static(b"slow")).await.unwrap();
    let event = within(5, "the warning", events.recv()).await.unwrap();
    let WorkerEvent::ConsumerTimeoutNear { elapsed, .. } = event else {
        panic!("unexpected {event:?}");
    };
    assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
    worker.shutdown().await.unwrap();
    assert_eq!(
        depth(&conn, &queue.names().queue).await,
        0,
        "the slow job was still acked"
    );
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_dead_letter_copy_is_not_confirmed_is_requeued_not_lost() {
    let conn = connect().await;
    let opts = options("unconfirmed", 0, &[]);
    let queue = WorkQueue::declare(&conn, "unconfirmed", Raw, opts.clone())
        .await
        .unwrap();
    let channel = conn.open_channel().await.unwrap();
    channel
        .queue_delete(&queue.names().dead, Default::default())
        .await
        .unwrap();
    let worker = queue
        .worker(WorkerOptions::default(), |_| async {
            Err(JobError::fatal("no"))
        })
        .await
        .unwrap();
    let mut events = worker.events();
    queue.push(&Bytes::from_static(b"precious")).await.unwrap();
    let event = within(5, "the requeue", events.recv()).await.unwrap();
    assert!(matches!(event, WorkerEvent::Requeued { .. }), "{event:?}");
    // Declaring again brings the dead-letter queue back; the requeued job then reaches it.
    WorkQueue::declare(&conn, "unconfirmed", Raw, opts)
        .await
        .unwrap();
    let (body, _) = take_dead(&conn, &queue.names().dead).await;
    assert_eq!(&body[..], b"precious");
    worker.shutdown().await.unwrap();
    channel.close().await.unwrap();
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_thousand_jobs_in_flight_loses_none() {
    let conn = connect().await;
    let queue = WorkQueue::declare(&conn, "drain", Json::<u32>::new(), options("drain", 0, &[]))
        .await
        .unwrap();
    for n in 0..1000 {
        queue.push(&n).await.unwrap();
    }
    let done = Arc::new(AtomicU32::new(0));
    let started = Arc::new(AtomicU32::new(0));
    let (d, s) = (done.clone(), started.clone());
    let worker = queue
        .worker(
            WorkerOptions {
                prefetch: 200,
                concurrency: 8,
                ..Default::default()
            },
            move |_| {
                let (d, s) = (d.clone(), s.clone());
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    d.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    within(20, "some progress", async {
        while done.load(Ordering::SeqCst) < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    within(20, "the shutdown", worker.shutdown()).await.unwrap();
    let handled = done.load(Ordering::SeqCst);
    assert!(handled < 1000, "shut down before the end");
    assert_eq!(
        started.load(Ordering::SeqCst),
        handled,
        "every started job finished"
    );
    // Requeues settle asynchronously in the broker: wait for the count to add up.
    within(10, "every job handled or back in the queue", async {
        while handled + depth(&conn, &queue.names().queue).await != 1000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    queue.delete().await.unwrap();
}
