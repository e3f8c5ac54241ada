//! The quickstart works as printed: run `bulkhead quickstart` on a copy of examples/quickstart and run
//! the curl commands it prints, with the real curl.

mod common;

use common::free_addrs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "generated" {
            continue;
        }
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(name)).unwrap();
        }
    }
}

#[test]
fn quickstart_curl_commands_work_as_printed() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is required (installed by .ci/run)");
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart"),
        dir.path(),
    );
    let listen: [std::net::SocketAddr; 3] = free_addrs();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("quickstart")
        .arg("--dir")
        .arg(dir.path())
        .args(["--http-listen", &listen[0].to_string()])
        .args(["--https-listen", &listen[1].to_string()])
        .args(["--admin-listen", &listen[2].to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut commands = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(cmd) = line.trim_start().strip_prefix("curl ") {
            commands.push(format!("curl -sS --max-time 10 {cmd}"));
        }
        if line.starts_with("Edit ") {
            break;
        }
    }
    let outputs: Vec<String> = commands
        .iter()
        .map(|c| {
            let out = Command::new("sh").arg("-c").arg(c).output().unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(commands.len(), 6, "printed commands: {commands:#?}");
    assert!(
        outputs[0].contains("backend: acme-web"),
        "{}: {}",
        commands[0],
        outputs[0]
    );
    assert!(
        outputs[1].contains("backend: globex-web"),
        "{}: {}",
        commands[1],
        outputs[1]
    );
    assert!(
        outputs[2].contains("backend: globex-web"),
        "{}: {}",
        commands[2],
        outputs[2]
    );
    assert!(
        outputs[3].contains("404"),
        "{}: {}",
        commands[3],
        outputs[3]
    );
    assert!(
        outputs[4].contains("\"items\""),
        "{}: {}",
        commands[4],
        outputs[4]
    );
    assert!(
        outputs[5].contains("# EOF"),
        "{}: {}",
        commands[5],
        outputs[5]
    );
}
