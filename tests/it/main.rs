//! Every integration test of Notebox, in one test binary (`cargo test --test it`): one
//! link instead of one per file, and the tests of every file share the test threads, so a
//! file whose tests mostly wait (a schedule's minute boundary, a booking's window) no longer
//! holds the suite up on its own. One module per former file; filter by its name, e.g.
//! `cargo test --test it origins::`.

#[path = "../chromium/mod.rs"]
mod chromium;
#[path = "../common/mod.rs"]
mod common;
#[path = "../git_server/mod.rs"]
mod git_server;
#[path = "../webhook_receiver/mod.rs"]
mod webhook_receiver;

mod attack;
mod directory;
mod environments;
mod foundation;
mod full_disk;
mod fuzz;
mod gpus;
mod idle;
mod jobs;
mod jupyterlab;
mod launch;
mod notebooks;
mod origins;
mod proxy;
mod quotas;
mod secrets;
mod service;
mod share;
mod sharing;
mod ui;
mod usage;
