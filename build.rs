//! Build facts for `hothot --version`: the git commit built (`unknown`
//! outside a git checkout, as in a crates.io tarball) and the version of
//! Pingora in Cargo.lock. A dozen lines, where `vergen` would bring a
//! dependency tree for the same two strings.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HOTHOT_GIT_COMMIT={commit}");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let pingora = lock
        .split("[[package]]")
        .find(|package| package.contains("name = \"pingora-core\""))
        .and_then(|package| package.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|version| version.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HOTHOT_PINGORA_VERSION={pingora}");
    // A new commit changes HEAD or the branch it points to.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=Cargo.lock");
}
