//! echo-im over TLS, as real processes: a server with `--tls-cert`/`--tls-key` and clients
//! with `--tls --ca`; files that do not hold what they should are refused at start, naming
//! the flag; `demo --tls` runs the whole narrated demo over TLS with a certificate
//! authority made for the run.

mod common;

use common::process::{example, free_addr, Proc};
use std::path::PathBuf;
use std::process::Command;

/// A CA and a certificate for `localhost`, as files in a directory of their own.
fn pki_files() -> (PathBuf, PathBuf, PathBuf) {
    let pki = common::pki::pki();
    let dir = std::env::temp_dir().join(format!(
        "echo-im-tls-{}-{}",
        std::process::id(),
        free_addr().port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_path, cert, keyf) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.chain_pem).unwrap();
    std::fs::write(&keyf, &pki.key_pem).unwrap();
    (ca_path, cert, keyf)
}

fn tls_client(user: &str, port: u16, ca: &std::path::Path) -> Proc {
    let mut cmd = Command::new(example());
    cmd.args(["client", "--user", user, "--tls", "--ca"])
        .arg(ca)
        .args([
            "--servers",
            &format!("localhost:{port}"),
            "--ping-ms",
            "300",
        ]);
    Proc::spawn_cmd(cmd)
}

#[test]
fn users_chat_over_tls() {
    let (ca, cert, key) = pki_files();
    let addr = free_addr();
    let (cert_s, key_s) = (cert.to_string_lossy(), key.to_string_lossy());
    let _server = Proc::server(addr, &["--tls-cert", &cert_s, "--tls-key", &key_s]);
    let mut alice = tls_client("alice", addr.port(), &ca);
    let mut bob = tls_client("bob", addr.port(), &ca);
    alice.expect(|l| l.starts_with("connected to"));
    bob.expect(|l| l.starts_with("connected to"));
    alice.send(":to bob through TLS");
    bob.expect(|l| l == "[alice -> you] through TLS");
    // A plaintext client gets nowhere, and is told why.
    let mut plain = Proc::client("eve", &[addr]);
    plain.expect(|l| l.contains("connection closed by peer") || l.contains("all servers down"));
    let _ = std::fs::remove_dir_all(ca.parent().unwrap());
}

#[test]
fn files_that_do_not_hold_a_certificate_or_key_are_refused_at_start() {
    let (ca, _cert, key) = pki_files();
    let addr = free_addr().to_string();
    // A key where the certificate should be.
    let out = Command::new(example())
        .args(["server", "--listen", &addr, "--tls-cert"])
        .arg(&key)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
    // --tls without --ca is refused by the argument parser.
    let out = Command::new(example())
        .args(["client", "--user", "a", "--tls"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"));
    let _ = std::fs::remove_dir_all(ca.parent().unwrap());
}

#[test]
fn the_tls_demo_runs_by_itself_and_reports_exactly_once() {
    let mut demo = Proc::spawn(&["demo", "--tls"]);
    demo.expect(|l| l.contains("all over TLS"));
    demo.expect(|l| l.contains("exactly once: yes"));
    let status = demo.child.wait().unwrap();
    assert!(status.success());
}
