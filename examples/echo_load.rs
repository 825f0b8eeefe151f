//! Load generator for echo servers: N connections, K messages of 36 bytes in flight on each,
//! for a fixed time; prints round trips per second and latency percentiles. One thread, mio.
//!
//! ```text
//! cargo run --release --example echo_load -- ADDR CONNS IN_FLIGHT SECONDS
//! ```
//!
//! Output, one line: `conns=.. in_flight=.. rtt_per_s=.. p50_us=.. p99_us=.. total=..`
//! (`total` counts every round trip, warm-up included).

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MSG: usize = 36;

struct Conn {
    stream: TcpStream,
    /// When each message in flight was sent, oldest first.
    sent: VecDeque<Instant>,
    /// Bytes of the current (partial) echoed message received so far.
    partial: usize,
    /// Bytes that could not be written yet.
    backlog: usize,
    connected: bool,
}

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = arg(1, "127.0.0.1:7000".parse().expect("literal"));
    let conns: usize = arg(2, 100);
    let in_flight: usize = arg(3, 1);
    let secs: f64 = arg(4, 3.0);
    let payload = [0x5au8; MSG * 64];

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut all = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut stream = TcpStream::connect(addr)?;
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        all.push(Conn {
            stream,
            sent: VecDeque::with_capacity(in_flight),
            partial: 0,
            backlog: 0,
            connected: false,
        });
    }
    let start = Instant::now();
    let warmup = Duration::from_millis(500);
    let end = start + warmup + Duration::from_secs_f64(secs);
    let mut measuring = false;
    let mut done = 0u64;
    let mut total = 0u64;
    let mut lat_us: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    let mut measure_start = start;
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        let now = Instant::now();
        if !measuring && now >= start + warmup {
            measuring = true;
            measure_start = now;
            done = 0;
            lat_us.clear();
        }
        for ev in events.iter() {
            let c = &mut all[ev.token().0];
            if !c.connected && ev.is_writable() {
                c.connected = true;
                let _ = c.stream.set_nodelay(true);
                c.backlog += in_flight * MSG;
                for _ in 0..in_flight {
                    c.sent.push_back(now);
                }
            }
            if ev.is_readable() {
                loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => return Err(io::Error::other("server closed")),
                        Ok(n) => {
                            c.partial += n;
                            while c.partial >= MSG {
                                c.partial -= MSG;
                                if let Some(t) = c.sent.pop_front() {
                                    total += 1;
                                    if measuring {
                                        lat_us.push(now.duration_since(t).as_micros() as u32);
                                        done += 1;
                                    }
                                }
                                c.sent.push_back(now);
                                c.backlog += MSG;
                            }
                            if n < buf.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            while c.connected && c.backlog > 0 {
                let n = c.backlog.min(payload.len());
                match c.stream.write(&payload[..n]) {
                    Ok(w) => c.backlog -= w,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let elapsed = measure_start.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    let pct = |p: f64| {
        lat_us
            .get(((lat_us.len() as f64 * p) as usize).min(lat_us.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "conns={conns} in_flight={in_flight} rtt_per_s={:.0} p50_us={} p99_us={} total={total}",
        done as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
