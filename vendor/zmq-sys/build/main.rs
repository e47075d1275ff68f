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
    quiet_third_party_warnings();
    let sodium = zeromq_src::LibLocation::new(dep("DEP_SODIUM_LIB"), dep("DEP_SODIUM_INCLUDE"));
    zeromq_src::Build::new().with_libsodium(Some(sodium)).build();
}

/// Compiles libzmq without compiler warnings (`-w`). They are upstream's and
/// not ours to fix; cargo hides a registry crate's, but shows every one of a
/// path dependency's like this crate on each fresh build. Flags the user set
/// are kept: `-w` is appended to the variable the `cc` crate would read.
fn quiet_third_party_warnings() {
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
        env::set_var(&name, format!("{} -w", flags).trim());
    }
}
