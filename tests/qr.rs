//! `apppass add --qr` (and `regenerate --qr`): the new password also as a QR code in the terminal, for a phone's
//! camera. A QR decoder (rqrr) reads back exactly the password from what the CLI printed,
//! and that password logs in through the real libpam.

mod common;

use common::Sandbox;
use pam_apppass::code::Code;

const START: &str = "\x1b[30;107m";
const END: &str = "\x1b[0m";

/// The modules of the code the CLI drew: dark or light, row by row (two rows a line).
fn modules(printed: &str) -> Vec<Vec<bool>> {
    let mut rows = Vec::new();
    for line in printed.lines() {
        let Some(drawn) = line
            .split_once(START)
            .and_then(|(_, rest)| rest.strip_suffix(END))
        else {
            continue;
        };
        let (top, bottom): (Vec<bool>, Vec<bool>) = drawn
            .chars()
            .map(|c| match c {
                ' ' => (false, false),
                '\u{2584}' => (false, true),
                '\u{2580}' => (true, false),
                '\u{2588}' => (true, true),
                other => panic!("{other:?} in a QR line"),
            })
            .unzip();
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

fn decode(rows: &[Vec<bool>]) -> String {
    const SCALE: usize = 4;
    let (w, h) = (rows[0].len() * SCALE, rows.len() * SCALE);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        if rows[y / SCALE][x / SCALE] { 0 } else { 255 }
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the picture");
    grids[0].decode().expect("a readable QR code").1
}

#[test]
fn the_qr_code_reads_back_as_the_password() {
    let s = Sandbox::new();
    s.simple_service("imap", "");
    let out = s.apppass(&["add", "--user", "alice", "--service", "imap", "--qr"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let password = printed
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|w| w.len() == 34 && w.matches('-').count() == 6)
        .unwrap_or_else(|| panic!("no app password in {printed}"))
        .to_string();
    let rows = modules(&printed);
    assert!(rows.len() >= 25, "{printed}");
    assert!(
        rows.iter().all(|r| r.len() == rows[0].len()),
        "a square picture"
    );
    let read = decode(&rows);
    assert_eq!(read, password);
    assert_eq!(s.code("imap", "alice", &read), Code::SUCCESS);

    // Not with --json: a JSON object has no room for a picture.
    let both = s.apppass(&[
        "add",
        "--user",
        "alice",
        "--service",
        "imap",
        "--qr",
        "--json",
    ]);
    assert_eq!(both.status.code(), Some(2));

    // apppass regenerate --qr draws the new one the same way.
    let id = s.list()[0]["id"].as_i64().unwrap().to_string();
    let out = s.apppass(&["regenerate", &id, "--qr"]);
    assert!(out.status.success());
    let read = decode(&modules(&String::from_utf8(out.stdout).unwrap()));
    assert_ne!(read, password);
    assert_eq!(s.code("imap", "alice", &read), Code::SUCCESS);
    assert_eq!(s.code("imap", "alice", &password), Code::AUTH_ERR);
}
