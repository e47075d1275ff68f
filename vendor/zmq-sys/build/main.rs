//! Builds libzmq from zeromq-src's bundled source and links it statically,
//! with CURVE: libsodium comes from libsodium-sys-stable, which builds it from
//! its own bundled source and tells us where (its `links = "sodium"` metadata).
//!
//! To link a system libzmq instead, override this build script through the
//! `links = "zmq"` key (top-level README.md, "libzmq: built from source, or
//! the system's").

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");

    let dep = |key: &str| {
        env::var_os(key).map(PathBuf::from).unwrap_or_else(|| {
            panic!(
                "{} is not set: libsodium-sys-stable must be a dependency of zmq-sys",
                key
            )
        })
    };
    let mut extra = String::from("-w");
    if linux() {
        extra.push_str(LINUX_DEFINES);
    }
    append_compiler_flags(&extra);
    let sodium = zeromq_src::LibLocation::new(dep("DEP_SODIUM_LIB"), dep("DEP_SODIUM_INCLUDE"));
    zeromq_src::Build::new().with_libsodium(Some(sodium)).build();
}

/// What upstream's CMake build detects on Linux and zeromq-src leaves out
/// (its Linux branch defines only the poller and IPC): eventfd for the
/// mailboxes that wake libzmq's threads (instead of a socketpair, so a
/// wake-up is one 8-byte write and read), close-on-exec sockets, `accept4`,
/// the TCP keepalive options (without them `ZMQ_TCP_KEEPALIVE*` are silently
/// ignored), named I/O threads (`ZMQbg/IO/0` in `top -H`) and aligned
/// allocation. Debian's libzmq5 is built with all of them.
const LINUX_DEFINES: &str = " -DZMQ_HAVE_EVENTFD=1 -DZMQ_HAVE_EVENTFD_CLOEXEC=1 \
    -DZMQ_HAVE_SOCK_CLOEXEC=1 -DZMQ_HAVE_O_CLOEXEC=1 -DZMQ_HAVE_ACCEPT4=1 \
    -DZMQ_HAVE_SO_KEEPALIVE=1 -DZMQ_HAVE_TCP_KEEPCNT=1 -DZMQ_HAVE_TCP_KEEPIDLE=1 \
    -DZMQ_HAVE_TCP_KEEPINTVL=1 -DZMQ_HAVE_PTHREAD_SETNAME_2=1 -DZMQ_HAVE_POSIX_MEMALIGN=1";

/// Linux with glibc or musl (not Android, whose libc lacks some of these).
fn linux() -> bool {
    env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
        && env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu" || e == "musl")
}

/// Appends `extra` to the C and C++ flags the `cc` crate will read for
/// libzmq: `-w` (upstream's compiler warnings are not ours to fix; cargo
/// hides a registry crate's, but shows every one of a path dependency's like
/// this crate on each fresh build) and the Linux defines. Flags the user set
/// are kept.
fn append_compiler_flags(extra: &str) {
    let target = env::var("TARGET").unwrap_or_default();
    for kind in ["CFLAGS", "CXXFLAGS"] {
        let names = [
            format!("{}_{}", kind, target),
            format!("{}_{}", kind, target.replace('-', "_")),
            format!("TARGET_{}", kind),
            kind.to_string(),
        ];
        let (name, flags) = names
            .iter()
            .find_map(|n| env::var(n).ok().map(|v| (n.clone(), v)))
            .unwrap_or_else(|| (names[0].clone(), String::new()));
        println!("cargo:rerun-if-env-changed={}", name);
        env::set_var(&name, format!("{} {}", flags, extra).trim());
    }
}
