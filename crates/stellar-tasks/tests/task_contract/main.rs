//! One contract, two stores: every case runs on memory (Tokio's clock paused) and on Redis (a real
//! `redis-server`), one module per store capability, and the user API end to end.

#[macro_use]
mod support;

mod inspector;
mod leadership;
mod maintenance;
mod pause;
mod queue;
mod schedules;
mod shutdown;
mod tasks;
mod workers;
