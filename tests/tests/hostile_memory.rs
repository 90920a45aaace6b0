//! What a hostile broker can make the client hold: bounded by what we chose, never by what the
//! peer announces. One test, its scenarios one after the other, because it reads this process's
//! memory peaks (`VmPeak`, `VmHWM`), which other tests running beside it would move.

use std::time::Duration;

use amqp_client::{Connection, ConnectionConfig, ConsumeOptions};
use amqp_tests::hostile::{HostileBroker, Peer, RABBITMQ_TUNE, memory_peaks_kib};
use amqp_wire::methods::{BasicConsumeOk, BasicDeliver, ChannelOpenOk, ConnectionTune};
use amqp_wire::{
    BasicProperties, ContentHeader, DeliveryTag, FieldArray, FieldTable, FieldValue, Frame,
    ShortStr,
};
use bytes::Bytes;

const MIB: u64 = 1024;

/// Runs `scenario` and returns how much it raised the process's virtual and resident peaks,
/// in MiB.
fn peaks_raised_by(scenario: impl Future<Output = ()>) -> (u64, u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Threads and their stacks first, so they do not count as the scenario's.
    runtime.block_on(async { tokio::time::sleep(Duration::from_millis(10)).await });
    let (virt, rss) = memory_peaks_kib();
    runtime.block_on(scenario);
    let (virt_after, rss_after) = memory_peaks_kib();
    ((virt_after - virt) / MIB, (rss_after - rss) / MIB)
}

/// The broker announces a 4 GiB frame_max, then a 4 GiB frame.
async fn huge_frame() {
    let tune = ConnectionTune {
        frame_max: u32::MAX,
        ..RABBITMQ_TUNE
    };
    let broker = HostileBroker::start(tune, |mut peer: Peer| async move {
        if peer.serve_until("basic.get").await.is_some() {
            let _ = peer.send_raw(&[3, 0, 1, 0xff, 0xff, 0xff, 0xf0]).await;
            peer.watch_client_leave(Duration::from_secs(10)).await;
        }
    })
    .await;
    let conn = Connection::connect(&broker.url()).await.expect("connect");
    let ch = conn.open_channel().await.expect("channel");
    let error = ch
        .get("q", false)
        .await
        .expect_err("a frame larger than ours");
    assert_eq!(
        error.reply_code(),
        Some(amqp_client::ReplyCode::FRAME_ERROR),
        "{error}"
    );
}

/// A delivery announcing a body of 128 MiB (the largest message accepted), of which one frame
/// comes.
async fn huge_body_announced() {
    let broker = HostileBroker::start(RABBITMQ_TUNE, |mut peer: Peer| async move {
        let Some((channel, _)) = peer.serve_until("basic.consume").await else {
            return;
        };
        let ok = BasicConsumeOk {
            consumer_tag: ShortStr::from_static("c"),
        };
        let header = ContentHeader {
            body_size: 128 << 20,
            properties: BasicProperties::default(),
        };
        let sent = async {
            peer.send_method(channel.0, ok).await?;
            peer.send_method(channel.0, deliver(1)).await?;
            peer.send(&Frame::Header(channel, header)).await?;
            peer.send(&Frame::Body(channel, Bytes::from(vec![0u8; 100_000])))
                .await
        };
        if sent.await.is_ok() {
            peer.serve_until("never").await;
        }
    })
    .await;
    let conn = Connection::connect(&broker.url()).await.expect("connect");
    let ch = conn.open_channel().await.expect("channel");
    let _consumer = ch
        .consume("q", ConsumeOptions::default())
        .await
        .expect("consume");
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// 150 deliveries whose 128 KiB header frames hold arrays of voids (one octet on the wire,
/// a whole value decoded), to a consumer nobody reads.
async fn tables_that_decode_large() {
    let broker = HostileBroker::start(RABBITMQ_TUNE, |mut peer: Peer| async move {
        let Some((channel, _)) = peer.serve_until("basic.consume").await else {
            return;
        };
        let ok = BasicConsumeOk {
            consumer_tag: ShortStr::from_static("c"),
        };
        if peer.send_method(channel.0, ok).await.is_err() {
            return;
        }
        let header = Frame::Header(channel, void_header());
        for tag in 1..=150 {
            let sent = async {
                peer.send_method(channel.0, deliver(tag)).await?;
                peer.send(&header).await
            };
            if sent.await.is_err() {
                return;
            }
        }
        peer.serve_until("never").await;
    })
    .await;
    let conn = Connection::connect(&broker.url()).await.expect("connect");
    let ch = conn.open_channel().await.expect("channel");
    let _unread = ch
        .consume("q", ConsumeOptions::default())
        .await
        .expect("consume");
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// A broker that reads nothing and floods deliveries for a consumer the client does not have:
/// each makes the client send a nack, which the broker never reads.
async fn replies_the_broker_never_reads() {
    let tune = ConnectionTune {
        heartbeat: 1,
        ..RABBITMQ_TUNE
    };
    let broker = HostileBroker::start(tune, |mut peer: Peer| async move {
        let Some((channel, _)) = peer.serve_until("channel.open").await else {
            return;
        };
        let opened = peer.send_method(channel.0, ChannelOpenOk).await;
        let header = Frame::Header(
            channel,
            ContentHeader {
                body_size: 0,
                properties: BasicProperties::default(),
            },
        );
        if opened.is_err() {
            return;
        }
        for tag in 1..=1_000_000 {
            let mut unknown = deliver(tag);
            unknown.consumer_tag = ShortStr::from_static("nobody");
            let sent = async {
                peer.send_method(channel.0, unknown).await?;
                peer.send(&header).await
            };
            if sent.await.is_err() {
                return;
            }
        }
    })
    .await;
    let mut config = ConnectionConfig::from_uri(&broker.url()).expect("url");
    config.recovery.enabled = false;
    let conn = Connection::connect_with(config).await.expect("connect");
    let _ch = conn.open_channel().await.expect("channel");
    for _ in 0..200 {
        if conn.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        matches!(
            conn.close_reason(),
            Some(amqp_client::Error::WriteStalled(_))
        ),
        "the session ends when its replies go unread: {:?}",
        conn.close_reason()
    );
}

fn deliver(tag: u64) -> BasicDeliver {
    BasicDeliver {
        consumer_tag: ShortStr::from_static("c"),
        delivery_tag: DeliveryTag(tag),
        routing_key: ShortStr::from_static("q"),
        ..Default::default()
    }
}

/// A header with no body whose table nearly fills a 128 KiB frame with voids.
fn void_header() -> ContentHeader {
    let voids = FieldValue::Array(FieldArray(vec![FieldValue::Void; 130_000]));
    let headers: FieldTable = [("v", voids)].into_iter().collect();
    ContentHeader {
        body_size: 0,
        properties: BasicProperties {
            headers: Some(headers),
            ..Default::default()
        },
    }
}

#[test]
fn a_hostile_broker_cannot_make_the_client_hold_what_it_announces() {
    let (virt, _) = peaks_raised_by(huge_frame());
    eprintln!("4 GiB frame_max and frame header: virtual peak +{virt} MiB");
    assert!(
        virt < 256,
        "a 4 GiB frame header raised the virtual peak by {virt} MiB"
    );

    let (virt, _) = peaks_raised_by(huge_body_announced());
    eprintln!("128 MiB body announced, 100 kB sent: virtual peak +{virt} MiB");
    assert!(
        virt < 64,
        "a 128 MiB body announced raised the virtual peak by {virt} MiB"
    );

    let (_, rss) = peaks_raised_by(replies_the_broker_never_reads());
    eprintln!("a flood of deliveries for no consumer, replies unread: resident peak +{rss} MiB");
    assert!(
        rss < 48,
        "replies nobody reads raised the resident peak by {rss} MiB"
    );

    let (_, rss) = peaks_raised_by(tables_that_decode_large());
    eprintln!("150 unread deliveries, 128 KiB tables of voids: resident peak +{rss} MiB");
    assert!(
        rss < 192,
        "150 unread deliveries with large-decoding tables raised the resident peak by {rss} MiB"
    );
}
