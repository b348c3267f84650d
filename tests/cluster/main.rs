//! Several hothot instances, one order (#25): real etcd (Debian's
//! `etcd-server`, three members on loopback ports, started here) and
//! hothot instances as their own processes over the same origins. After
//! each story the origins hold the same data, every origin applied the
//! same sequence (redeliveries aside), and every write a client saw
//! succeed is on every origin.

#[path = "harness.rs"]
mod cluster_harness;
#[path = "../common/mod.rs"]
mod common;
mod failures;
mod instances;
mod order;
mod relay;
