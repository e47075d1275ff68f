//! The real broker in-process: Majordomo peers written from the RFCs (0.1
//! and 0.2) beside our header client and plain REQ clients and REP workers;
//! readiness, credit, queue bound and expiry, worker loss, MMI and
//! `/services`, bad input, deadlines, overload and drain.

mod bad_input;
mod dispatch;
mod liveness;
mod majordomo;
mod mmi;
mod plain;
mod support;
