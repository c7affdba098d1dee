//! TCP retransmits: a bulk transfer over loopback inside a network namespace of our own, with an
//! nftables rule that drops a few percent of its data packets, compared with the namespace's
//! own RetransSegs counter: in `observer record`'s report, and in what the agent exports to a
//! real collector (rotel) and a real Prometheus, under the OpenTelemetry semantic conventions'
//! network attributes.
//!
//! How the conditions are made, and why the counts must match (exactly on a quiet machine; see
//! netns::assert_retransmits_match for the rare retransmit the kernel does not dispatch):
//! - The drop rule is on the INPUT hook. On the OUTPUT hook a dropped packet is a local send
//!   error (NF_DROP makes ip_local_out return -EPERM to TCP), which TCP answers by sending the
//!   data again from its write queue without counting a retransmit: measured here, 100 MiB with
//!   5% output drops gave 0 RetransSegs and 0 tracepoint hits. Dropped on input, the packet has
//!   left the sender and is lost, so the sender retransmits it (fast retransmit, RTO or TLP).
//! - Only data packets towards the server port are dropped (IP length > 200), never SYN, SYN-ACK,
//!   ACK or FIN: a retransmitted SYN-ACK counts in RetransSegs but fires tcp_retransmit_synack,
//!   not tcp_retransmit_skb.
//! - tcp:tcp_retransmit_skb fires once per retransmitted skb, while RetransSegs adds
//!   tcp_skb_pcount(skb), the number of MSS-sized segments in it. TCP always builds GSO skbs of
//!   several segments (since Linux 4.13, whatever ethtool's tso/gso settings say: measured here
//!   with `ethtool -K lo tso off gso off`, 4 x 192 MiB gave 711 RetransSegs for 695 tracepoint
//!   hits, with retransmitted skbs of 130966 bytes = 2 x MSS 65483; with lo at MTU 1500, 1003
//!   for 939). Capping lo's `gso_max_segs` at 1 makes every skb one segment, and then the two
//!   agree exactly (measured: 5 x 128 MiB, 601 and 601).
//! - On recent kernels (this 6.18 one) the tracepoint also fires for failed attempts (its `err`),
//!   which observer counts apart (`failed`); RetransSegs counts attempts that passed its checks,
//!   including those whose sending then failed locally (TCPRetransFail). On loopback in a new
//!   namespace none fail (checked: TCPRetransFail stays 0), so `count` is comparable.
//! - The namespace is new and holds only this connection, so its RetransSegs delta is this
//!   connection's retransmits. The transfer runs entirely inside the recording; before reading
//!   the counter we wait until the sender has nothing unacknowledged.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use observer_tests::agent::{Agent, free_addr};
use observer_tests::netns::{self, NetNs};
use observer_tests::prom::{self, Prometheus};
use observer_tests::rotel::{self, Export, Rotel, TempDir};
use observer_tests::{Recording, observer_ok, report, require_root, skip_or_fail};

const PORT: u16 = 5201;
const BYTES: usize = 192 << 20;
const DROP_PERCENT: u32 = 5;

/// Bytes the kernel has not yet had acknowledged on a socket (SIOCOUTQ).
fn unacked(s: &TcpStream) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(r, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    n
}

struct Transfer {
    local_port: u16,
    retrans_before: u64,
}

/// Inside the namespace: connect to our listener and send BYTES, then wait until everything is
/// acknowledged and both ends are closed.
fn transfer(addr: IpAddr) -> anyhow::Result<Transfer> {
    let retrans_before = netns::tcp_snmp("RetransSegs")?;
    let listener = TcpListener::bind(SocketAddr::new(addr, PORT))?;
    let mut client = TcpStream::connect(SocketAddr::new(addr, PORT))?;
    let local_port = client.local_addr()?.port();
    let (mut server, _) = listener.accept()?;
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            match server.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    });
    let chunk = vec![0x42u8; 1 << 20];
    for _ in 0..BYTES / chunk.len() {
        client.write_all(&chunk)?;
    }
    client.shutdown(std::net::Shutdown::Write)?;
    let got = reader.join().expect("reader thread")?;
    anyhow::ensure!(got == BYTES, "server received {got} of {BYTES} bytes");
    let t = Instant::now();
    while unacked(&client) > 0 {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(5),
            "data still unacknowledged after 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(client);
    Ok(Transfer {
        local_port,
        retrans_before,
    })
}

/// A new network namespace whose lo carries one segment per skb and drops DROP_PERCENT of the
/// data packets to PORT on input.
fn lossy_namespace() -> NetNs {
    let ns = NetNs::create().expect("create network namespace");
    netns::one_segment_per_skb(&ns).expect("set gso_max_segs 1 on lo");
    ns.exec(
        &["nft", "-f", "-"],
        &format!(
            "table inet observer_test {{
               chain input {{
                 type filter hook input priority 0; policy accept;
                 tcp dport {PORT} meta length > 200 numgen random mod 100 < {DROP_PERCENT} drop
               }}
             }}"
        ),
    )
    .expect(
        "add nftables drop rule in the namespace (needs the `nft` tool: apt-get install nftables)",
    );
    ns
}

/// The namespace's RetransSegs now, less `before`.
fn retransmits_since(ns: &NetNs, before: u64) -> u64 {
    ns.run(|| netns::tcp_snmp("RetransSegs"))
        .unwrap()
        .expect("RetransSegs")
        - before
}

fn run(addr: IpAddr) {
    require_root!();
    let ns = lossy_namespace();

    let top = 100;
    let rec = observer_ok!(
        Recording::start(&[
            "--signals",
            "tcp",
            "--duration",
            "6s",
            "--top",
            &top.to_string(),
            "--stats"
        ])
        .wait_attached()
    );
    let t = Instant::now();
    let xfer = ns.run(|| transfer(addr)).unwrap().expect("transfer");
    let xfer_time = t.elapsed();
    eprintln!(
        "{} MiB over [{addr}]:{PORT} from port {} in {xfer_time:.2?}; {:?} of the recording left",
        BYTES >> 20,
        xfer.local_port,
        rec.remaining()
    );
    assert!(
        rec.remaining() > Duration::from_millis(500),
        "the transfer did not finish well inside the recording ({xfer_time:?}); cannot compare counts"
    );
    let report = observer_ok!(rec.finish());
    let (retrans_after, retrans_fail) = ns
        .run(|| -> anyhow::Result<(u64, u64)> {
            Ok((
                netns::tcp_snmp("RetransSegs")?,
                netns::net_counter("netstat", "TcpExt", "TCPRetransFail")?,
            ))
        })
        .unwrap()
        .unwrap();
    let kernel = retrans_after - xfer.retrans_before;
    // RetransSegs also counts retransmits whose sending then failed locally (TCPRetransFail),
    // which observer reports apart as `failed`; a new namespace has had none, so every one
    // counted here left the host.
    assert_eq!(
        retrans_fail, 0,
        "local retransmit failures in the namespace"
    );
    eprintln!("kernel RetransSegs in the namespace: +{kernel}");
    assert!(
        kernel > 0,
        "our drop rule caused no retransmits: nothing to compare"
    );

    assert_eq!(
        report.signal_keys(),
        ["tcp_retransmits"],
        "only the requested signal appears"
    );
    let sig = report.signal("tcp_retransmits");
    let total = report::u64_of(sig, "count", "tcp_retransmits");
    let list = sig["by_remote"].as_array().expect("by_remote list");
    assert!(list.len() <= top, "by_remote longer than --top");
    for w in list.windows(2) {
        assert!(
            w[0]["count"].as_u64() >= w[1]["count"].as_u64(),
            "by_remote not sorted by count: {list:?}"
        );
    }
    let listed: u64 = list.iter().map(|e| e["count"].as_u64().unwrap_or(0)).sum();
    let dropped = report::dropped(sig, "by_remote", "tcp_retransmits");
    assert!(
        listed <= total,
        "by_remote adds up to {listed} > count {total}"
    );
    if list.len() < top {
        assert_eq!(
            listed + dropped,
            total,
            "by_remote not cut by --top yet does not add up to count"
        );
    }
    let (family, remote) = match addr {
        IpAddr::V4(_) => ("ipv4", "127.0.0.1"),
        IpAddr::V6(_) => ("ipv6", "::1"),
    };
    let ours: Vec<&serde_json::Value> = list
        .iter()
        .filter(|e| {
            e["remote_port"].as_u64() == Some(PORT.into())
                && e["local_port"].as_u64() == Some(xfer.local_port.into())
        })
        .collect();
    eprintln!("observer: count {total}; entries for our connection: {ours:?}");
    assert!(
        !ours.is_empty(),
        "no by_remote entry for local port {} -> {PORT}: {list:?}",
        xfer.local_port
    );
    const STATES: [&str; 13] = [
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
        "BOUND_INACTIVE",
    ];
    for e in &ours {
        let ctx = format!("by_remote entry {e}");
        assert_eq!(report::str_of(e, "family", &ctx), family, "{ctx}");
        assert_eq!(report::str_of(e, "remote_addr", &ctx), remote, "{ctx}");
        let state = report::str_of(e, "state", &ctx);
        assert!(STATES.contains(&state), "{ctx}: unknown state {state:?}");
    }
    assert!(
        ours.iter().any(|e| e["state"] == "ESTABLISHED"),
        "no retransmit while ESTABLISHED: {ours:?}"
    );
    let observed: u64 = ours.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    // Observer loses nothing its program sees: every run is counted, sent or failed.
    let programs = report.json["programs"]
        .as_array()
        .expect("programs (record --stats)");
    let runs = programs
        .iter()
        .find(|p| p["program"] == "tcp_retransmit_skb")
        .and_then(|p| p["runs"].as_u64())
        .expect("runs of tcp_retransmit_skb");
    let failed = report::u64_of(sig, "failed", "tcp_retransmits");
    assert_eq!(
        total + failed,
        runs,
        "count {total} + failed {failed} vs the program's {runs} runs"
    );
    netns::assert_retransmits_match(observed, kernel, "our connection");
    assert!(
        total >= observed,
        "count {total} < our connection's {observed}"
    );
}

#[test]
fn tcp_retransmits_over_ipv4_loopback_match_retranssegs() {
    run(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn tcp_retransmits_over_ipv6_loopback_match_retranssegs() {
    run(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

/// The agent, exporting every second to rotel and scraped by Prometheus, while the same transfer
/// runs (IPv4): the connection's series carry the semantic conventions' network attributes
/// (`network.connection.state` with the registry's values, `established` while the data flows)
/// under the same names in both, and add up to what the namespace's RetransSegs counted.
#[test]
fn the_agent_exports_retransmits_under_the_network_attributes() {
    require_root!();
    let rotel_bin = match rotel::find_binary() {
        Ok(b) => b,
        Err(e) => skip_or_fail!("{e}"),
    };
    let Some(prometheus_bin) = prom::binary() else {
        skip_or_fail!("prometheus not found (install it: {})", prom::INSTALL)
    };
    let ns = lossy_namespace();
    let dir = TempDir::new("tcp-agent");
    let collector = Rotel::start(&rotel_bin, &dir.0, "rotel", rotel::free_ports());
    let listen = free_addr();
    let prometheus = Prometheus::start(&prometheus_bin, listen, false);
    let agent = observer_ok!(
        Agent::start(
            &[
                "--signals",
                "tcp",
                "--interval",
                "1s",
                "--otlp-endpoint",
                &collector.grpc_endpoint(),
                "--prometheus-listen",
                &listen.to_string()
            ],
            &[]
        )
        .ready()
    );
    let xfer = ns
        .run(|| transfer(IpAddr::V4(Ipv4Addr::LOCALHOST)))
        .unwrap()
        .expect("transfer");
    let kernel = retransmits_since(&ns, xfer.retrans_before);
    eprintln!("kernel RetransSegs in the namespace: +{kernel}");
    assert!(kernel > 0, "our drop rule caused no retransmits");

    // OTLP: every series of the connection, by state.
    let (peer_port, local_port) = (format!("Int({PORT})"), format!("Int({})", xfer.local_port));
    let ours = |e: &Export| -> Vec<(Vec<(String, String)>, u64)> {
        e.metric("observer.tcp.retransmits")
            .map(|m| {
                m.points
                    .iter()
                    .filter(|p| {
                        p.attr("network.peer.port") == Some(peer_port.as_str())
                            && p.attr("network.local.port") == Some(local_port.as_str())
                    })
                    .map(|p| {
                        let v = p.value.as_deref().and_then(|v| v.parse().ok());
                        (p.attributes.clone(), v.expect("a count"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let total = |e: &Export| ours(e).iter().map(|(_, n)| n).sum::<u64>();
    let exports = collector.wait_for(
        "the connection's retransmits",
        Duration::from_secs(15),
        // Settled: the transfer is over, so two exports in a row with the same total (within
        // what the kernel may fail to dispatch, see assert_retransmits_match) hold all of it.
        |e| {
            e.len() >= 2 && {
                let (a, b) = (total(&e[e.len() - 2]), total(&e[e.len() - 1]));
                a == b && b + 1 + kernel / 200 >= kernel
            }
        },
    );
    let last = exports.last().unwrap();
    let series = ours(last);
    eprintln!("the connection's series: {series:?}");
    netns::assert_retransmits_match(total(last), kernel, "exported retransmits");
    const STATES: [&str; 11] = [
        "closed",
        "close_wait",
        "closing",
        "established",
        "fin_wait_1",
        "fin_wait_2",
        "last_ack",
        "listen",
        "syn_received",
        "syn_sent",
        "time_wait",
    ];
    for (attributes, _) in &series {
        let mut keys: Vec<&str> = attributes.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "network.connection.state",
                "network.local.port",
                "network.peer.address",
                "network.peer.port",
                "network.type"
            ],
            "{attributes:?}"
        );
        let get = |k: &str| {
            attributes
                .iter()
                .find(|(key, _)| key == k)
                .unwrap()
                .1
                .as_str()
        };
        assert_eq!(get("network.peer.address"), "Str(127.0.0.1)");
        assert_eq!(get("network.type"), "Str(ipv4)");
        let state = get("network.connection.state");
        assert!(
            STATES.iter().any(|s| state == format!("Str({s})")),
            "{state} is not one of the registry's values"
        );
    }
    assert!(
        series.iter().any(|(a, _)| a
            .iter()
            .any(|(k, v)| k == "network.connection.state" && v == "Str(established)")),
        "no retransmit while established: {series:?}"
    );

    // Prometheus: the same attributes as labels.
    let labels = format!(
        "network_peer_address=\"127.0.0.1\",network_peer_port=\"{PORT}\",\
         network_local_port=\"{}\",network_type=\"ipv4\"",
        xfer.local_port
    );
    let query = format!("sum(observer_tcp_retransmits_total{{{labels}}})");
    let deadline = Instant::now() + Duration::from_secs(15);
    while prometheus.query_value(&query) != Some(kernel as f64) {
        assert!(
            Instant::now() < deadline,
            "{query} is {:?}, not {kernel}; Prometheus log:\n{}",
            prometheus.query_value(&query),
            prometheus.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let established = format!(
        "observer_tcp_retransmits_total{{{labels},network_connection_state=\"established\"}}"
    );
    assert!(
        prometheus
            .query_value(&established)
            .is_some_and(|v| v > 0.0),
        "{established}: {}",
        prometheus.query(&established)
    );
    agent.terminate_ok();
}
