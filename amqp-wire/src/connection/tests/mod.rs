//! Scripted-broker scenarios: every rule of the engine, its malformed sequences and their
//! reply codes, and its timers with injected time.

mod broker;
mod channels;
mod content;
mod handshake;
mod regressions;
mod timers;
