//! Service dispatch through the real broker in-process: Majordomo peers
//! written from the RFCs (0.1 and 0.2) beside our header client and plain
//! REQ clients; readiness, credit, queue bound and expiry, worker loss,
//! MMI and `/services`, and bad input on the worker path.

mod bad_input;
mod dispatch;
mod liveness;
mod majordomo;
mod mmi;
mod support;
