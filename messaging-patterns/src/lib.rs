//! Pub-sub, work queues, RPC and a consumer dispatcher on `amqp-client`: not written yet (issue 6).
