//! Role hosting: in-process state machines as MD participants on every core, reached by
//! real TCP participants and by each other across cores.

mod common;

use common::*;
use otp_wire::InternalDatagram;
use otpd::config::ClusterConfig;
use otpd::roles::{Output, Placement, Role};
use otpd::runtime::Runtime;
use std::time::Instant;

/// Answers every datagram on `channel` to its sender, msgtype + 1, and forwards a copy of
/// msgtype 50 datagrams to `relay_to` (another role's channel).
struct Echo {
    channel: u64,
    relay_to: u64,
}

impl Role for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn start(&mut self, _now: Instant, out: &mut Output) {
        out.subscribe(self.channel);
    }
    fn handle(
        &mut self,
        _now: Instant,
        _frame: &[u8],
        dg: &InternalDatagram<'_>,
        out: &mut Output,
    ) {
        let sender = dg.sender.unwrap_or(0);
        let mut w = out.datagram(&[sender], self.channel, dg.msgtype + 1);
        w.bytes(dg.payload);
        w.finish().unwrap();
        if dg.msgtype == 50 {
            let mut w = out.datagram(&[self.relay_to], sender, 60);
            w.bytes(dg.payload);
            w.finish().unwrap();
        }
    }
}

fn start(port: u16) -> Runtime {
    let mut config = ClusterConfig {
        cores: 2,
        pin_cores: false,
        ..ClusterConfig::default()
    };
    config.messagedirector.bind = Some(format!("127.0.0.1:{port}"));
    Runtime::start_with_roles(config, |p: Placement, _now| {
        let me = 500_000 + p.core as u64;
        let other = 500_000 + ((p.core + 1) % p.cores) as u64;
        vec![Box::new(Echo {
            channel: me,
            relay_to: other,
        }) as Box<dyn Role>]
    })
    .expect("runtime starts")
}

#[test]
fn roles_answer_participants_and_each_other_across_cores() {
    let port = free_port();
    let _rt = start(port);
    wait_for_port(port);
    let (mut client, mut tx) = (Md::connect(port), Md::connect(port));
    client.subscribe_confirmed(&mut tx, 777);

    for core in 0..2u64 {
        let role = 500_000 + core;
        client.send(&dg(&[role], 777, 10, b"ping"));
        client.expect(&dg(&[777], role, 11, b"ping"));
    }
    // Role on core 0 relays to the role on core 1, which answers the original sender.
    client.send(&dg(&[500_000], 777, 50, b"relay"));
    let mut got = vec![client.recv(), client.recv()];
    got.sort();
    let mut want = vec![
        dg(&[777], 500_000, 51, b"relay"),
        dg(&[777], 500_001, 61, b"relay"),
    ];
    want.sort();
    assert_eq!(got, want);
    client.expect_none();
}
