//! decode: a session captured through a recording proxy, and malformed input.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread::JoinHandle;

use amqp_wire::methods::{BasicPublish, ChannelOpen, QueueDeclare};
use amqp_wire::{
    BasicProperties, ChannelId, ContentHeader, FieldTable, FieldValue, Frame, ShortStr,
};
use bytes::{Bytes, BytesMut};

use crate::support::{TempQueue, amqp, amqp_with, broker_addr, unique, url_user};

/// Copies `from` to `to`, recording every octet, until `from` ends; then ends `to`'s writes.
fn pump(mut from: TcpStream, mut to: TcpStream, record: PathBuf) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(record).unwrap();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    file.write_all(&buf[..n]).unwrap();
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    })
}

/// A proxy on 127.0.0.1:0 to the broker for one connection, recording what the client and
/// the server send to two files.
fn recording_proxy(client_file: PathBuf, server_file: PathBuf) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let server = TcpStream::connect(broker_addr()).unwrap();
        let up = pump(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            client_file,
        );
        let down = pump(server, client, server_file);
        up.join().unwrap();
        down.join().unwrap();
    });
    (port, handle)
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(unique(name))
}

#[test]
fn a_captured_session_decodes_on_both_sides() {
    let q = TempQueue::new("capture");
    let (client_file, server_file) = (temp_file("client"), temp_file("server"));
    let (port, proxy) = recording_proxy(client_file.clone(), server_file.clone());
    let user = url_user();
    let password = crate::support::amqp_url();
    let via_proxy = format!(
        "amqp://{}@127.0.0.1:{port}/%2f",
        password
            .split_once("://")
            .and_then(|(_, r)| r.rsplit_once('@'))
            .map_or("guest:guest", |(userinfo, _)| userinfo)
    );
    let args = [
        "publish",
        "-k",
        &q.0,
        "--body",
        "hello",
        "--header",
        "n:int=7",
        "--content-type",
        "text/plain",
        "--confirm",
    ];
    amqp_with(&args, None, &via_proxy).ok();
    proxy.join().unwrap();

    let client = amqp(&["decode", client_file.to_str().unwrap()]).ok();
    let lines = client.lines();
    assert_eq!(lines[0], "       0 -    protocol-header AMQP 0-9-1");
    let expect_in_order = [
        "ch0  method    connection.start-ok client_properties={",
        "ch0  method    connection.tune-ok channel_max=",
        r#"ch0  method    connection.open virtual_host="/""#,
        "ch1  method    channel.open",
        "ch1  method    confirm.select no_wait=false",
        &format!(
            r#"ch1  method    basic.publish exchange="" routing_key="{}" mandatory=false"#,
            q.0
        ),
        r#"ch1  header    basic body_size=5 content_type="text/plain" headers={n:i32=7}"#,
        r#"ch1  body      size=5 "hello""#,
        "ch0  method    connection.close reply_code=200",
    ];
    let mut at = 0;
    for want in expect_in_order {
        let found = lines[at..].iter().position(|l| l.contains(want));
        let found =
            found.unwrap_or_else(|| panic!("no {want:?} after line {at}:\n{}", client.stdout));
        at += found + 1;
    }
    // The PLAIN response holds the password: hidden unless asked for.
    let start_ok = lines
        .iter()
        .find(|l| l.contains("connection.start-ok"))
        .unwrap();
    assert!(start_ok.contains("response=<"), "{start_ok}");
    assert!(!user.is_empty());

    let server = amqp(&["decode", server_file.to_str().unwrap()]).ok();
    for want in [
        "ch0  method    connection.start version_major=0 version_minor=9 server_properties={",
        "ch0  method    connection.tune channel_max=",
        "ch0  method    connection.open-ok",
        "ch1  method    channel.open-ok",
        "ch1  method    confirm.select-ok",
        "ch1  method    basic.ack delivery_tag=1 multiple=false",
        "ch0  method    connection.close-ok",
    ] {
        assert!(
            server.stdout.contains(want),
            "no {want:?}:\n{}",
            server.stdout
        );
    }
    assert!(!server.stdout.contains("protocol-header"));

    let json = amqp(&["decode", "--json", client_file.to_str().unwrap()])
        .ok()
        .json_lines();
    let header = json
        .iter()
        .find(|f| f["type"] == "header")
        .expect("a header frame");
    assert_eq!(header["channel"], 1);
    assert_eq!(header["body_size"], 5);
    assert_eq!(header["properties"]["content_type"], "text/plain");
    assert_eq!(
        header["headers"]["n"],
        serde_json::json!({"type": "i32", "value": 7})
    );
    let publish = json
        .iter()
        .find(|f| f["method"] == "basic.publish")
        .unwrap();
    assert_eq!(
        (&publish["class_id"], &publish["method_id"]),
        (&60.into(), &40.into())
    );
    assert_eq!(publish["fields"]["routing_key"], q.0.as_str());
    let _ = std::fs::remove_file(client_file);
    let _ = std::fs::remove_file(server_file);
}

/// A client's stream written with amqp-wire's encoder: protocol header, channel.open,
/// queue.declare, basic.publish, header, body.
fn encoded_session() -> (Vec<u8>, Vec<usize>) {
    let mut wire = BytesMut::from(&b"AMQP\x00\x00\x09\x01"[..]);
    let mut arguments = FieldTable::new();
    arguments.insert("x-queue-type", FieldValue::from("quorum"));
    let frames = [
        Frame::Method(ChannelId(1), ChannelOpen.into()),
        Frame::Method(
            ChannelId(1),
            QueueDeclare {
                queue: ShortStr::from_static("jobs"),
                durable: true,
                arguments,
                ..Default::default()
            }
            .into(),
        ),
        Frame::Method(
            ChannelId(1),
            BasicPublish {
                routing_key: ShortStr::from_static("jobs"),
                ..Default::default()
            }
            .into(),
        ),
        Frame::Header(
            ChannelId(1),
            ContentHeader {
                body_size: 2,
                properties: BasicProperties::default(),
            },
        ),
        Frame::Body(ChannelId(1), Bytes::from_static(b"hi")),
    ];
    let mut offsets = Vec::new();
    for frame in frames {
        offsets.push(wire.len());
        frame.encode(&mut wire).unwrap();
    }
    (wire.to_vec(), offsets)
}

#[test]
fn an_encoded_session_decodes_from_stdin_and_files() {
    let (wire, _) = encoded_session();
    let file = temp_file("encoded");
    std::fs::write(&file, &wire).unwrap();
    let out = amqp(&["decode", file.to_str().unwrap()]).ok();
    assert_eq!(out.lines().len(), 6, "{}", out.stdout);
    assert!(out.stdout.contains(
        r#"queue.declare queue="jobs" passive=false durable=true exclusive=false auto_delete=false no_wait=false arguments={x-queue-type:string="quorum"}"#
    ));
    let stdin = crate::support::amqp_stdin(&["decode", "-"], &wire).ok();
    assert_eq!(stdin.stdout, out.stdout);
    let _ = std::fs::remove_file(file);
}

#[test]
fn malformed_input_names_the_byte_offset_and_goes_on() {
    let (mut wire, offsets) = encoded_session();
    // Break queue.declare's frame-end octet: the frame before basic.publish.
    let broken = offsets[1];
    wire[offsets[2] - 1] = 0x00;
    wire.extend_from_slice(&[3, 0, 1, 0, 0, 0]); // a body frame cut off in its header
    let file = temp_file("malformed");
    std::fs::write(&file, &wire).unwrap();
    let out = amqp(&["decode", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let errors: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(errors.len(), 3, "{}", out.stderr);
    assert!(
        errors[0].starts_with(&format!(
            "amqp: error at byte {broken}: frame-end octet was 0x00, expected 0xce (501 FRAME_ERROR)"
        )),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains(&format!("going on at byte {}", offsets[2])),
        "{}",
        errors[0]
    );
    let end = wire.len() - 6;
    assert!(
        errors[1].starts_with(&format!(
            "amqp: error at byte {end}: input ends inside a frame header"
        )),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("2 malformed or truncated frame(s)"),
        "{}",
        errors[2]
    );
    // Everything around the damage is still there.
    for want in [
        "channel.open",
        "basic.publish",
        "body_size=2",
        r#"size=2 "hi""#,
    ] {
        assert!(out.stdout.contains(want), "no {want}: {}", out.stdout);
    }
    let _ = std::fs::remove_file(file);
}
