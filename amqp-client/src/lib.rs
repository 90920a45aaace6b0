//! The tokio transport and async API over `amqp-wire`: not written yet (issue 4).
