//! Inputs shared by the benchmarks: byte streams as RabbitMQ sends them.
