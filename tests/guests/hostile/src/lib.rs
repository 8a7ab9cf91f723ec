//! A hostile job for sandbox tests: its data names one misbehaviour
//! (`{"op": "loop"}`, `{"op": "alloc", "mb": 512}`, ...), and each host test
//! asserts the exact outcome of one of them.

use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, event, fatal, info, kv, lock};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Op {
    /// Returns at once.
    Ok,
    /// Burns CPU forever without calling the host.
    Loop,
    /// Polls `cancelled()` in a busy loop and returns when told to.
    LoopUntilCancelled,
    /// Sleeps in a host call (WASI poll) for `ms`.
    Sleep { ms: u64 },
    /// Allocates and touches `mb` MiB.
    Alloc { mb: usize },
    /// Reads a host file.
    ReadFile { path: String },
    /// Lists the environment and arguments.
    Env,
    /// Lists a directory.
    ListDir { path: String },
    /// Opens a TCP connection.
    Connect { addr: String },
    /// Panics with `message`.
    Panic { message: String },
    /// Executes `unreachable`.
    Trap,
    /// Recurses without bound.
    StackOverflow,
    /// Takes lock `name` and leaks the guard.
    LeakLock { name: String },
    /// Takes lock `name`, then panics while holding it.
    LockThenPanic { name: String },
    /// Takes lock `name` with `timeout_ms` and reports the token.
    Lock { name: String, timeout_ms: u64 },
    /// Logs `lines` lines of `len` bytes.
    SpamLog { lines: usize, len: usize },
    /// Prints `lines` lines to stdout and stderr.
    Print { lines: usize },
    /// Writes `lines` lines of `len` bytes (newline included) to stdout in large
    /// writes, as a chatty guest streaming output would.
    FloodStdout { lines: usize, len: usize },
    /// Writes kv keys `k0`, `k1`, ... of `bytes` bytes each until `keys` are
    /// written or the host refuses one; reports how many were written and why it stopped.
    KvFill { keys: usize, bytes: usize },
    /// Returns details of `bytes` bytes.
    BigOutput { bytes: usize },
    /// Writes a kv value of `bytes` bytes.
    BigKv { bytes: usize },
    /// Emits `times` events `name`, ignoring every error, and reports how many
    /// were accepted and refused and the first refusal.
    EmitFlood { name: String, times: u32 },
    /// Reports what its wall clock (`SystemTime::now()`) and `scheduled-at`
    /// read, in Unix milliseconds, and the UTC day the clock says it is.
    Clock,
    /// Fails (not retryable) with `message`.
    Fail { message: String },
}

struct Hostile;

impl Job for Hostile {
    fn info() -> JobInfo {
        JobInfo::new("hostile", "0.1.0").description("misbehaves on request")
    }

    fn run(ctx: &Context) -> Result<Outcome> {
        let op: Op = ctx.data()?;
        match op {
            Op::Ok => Ok(Outcome::none()),
            Op::Clock => {
                let ms = |t: std::time::SystemTime| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64)
                };
                let now = ms(std::time::SystemTime::now());
                Outcome::details(&json!({
                    "now_ms": now,
                    "scheduled_ms": ms(ctx.scheduled_at()),
                    "day": now / 86_400_000,
                }))
            }
            Op::Fail { message } => Err(fatal(message)),
            Op::Loop => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Op::LoopUntilCancelled => {
                let mut spins: u64 = 0;
                while !quartzite_sdk::cancelled() {
                    spins = std::hint::black_box(spins + 1);
                }
                Outcome::details(&json!({ "stopped": "cancelled", "spins": spins }))
            }
            Op::Sleep { ms } => {
                std::thread::sleep(Duration::from_millis(ms));
                Outcome::details(&json!({ "slept_ms": ms }))
            }
            Op::Alloc { mb } => {
                let mut chunks = Vec::new();
                for i in 0..mb {
                    let mut chunk = vec![0u8; 1 << 20];
                    chunk[i % (1 << 20)] = 1;
                    chunks.push(chunk);
                }
                Outcome::details(&json!({ "allocated_mb": chunks.len() }))
            }
            Op::ReadFile { path } => Outcome::details(&match std::fs::read(&path) {
                Ok(bytes) => json!({ "read": bytes.len() }),
                Err(e) => json!({ "error": e.to_string() }),
            }),
            Op::Env => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let args: Vec<String> = std::env::args().collect();
                let cwd = std::env::current_dir()
                    .map(|p| p.display().to_string())
                    .ok();
                Outcome::details(&json!({ "vars": vars, "args": args, "cwd": cwd }))
            }
            Op::ListDir { path } => Outcome::details(&match std::fs::read_dir(&path) {
                Ok(entries) => json!({ "entries": entries.count() }),
                Err(e) => json!({ "error": e.to_string() }),
            }),
            Op::Connect { addr } => Outcome::details(&match std::net::TcpStream::connect(&addr) {
                Ok(_) => json!({ "connected": true }),
                Err(e) => json!({ "error": e.to_string() }),
            }),
            Op::Panic { message } => panic!("{message}"),
            #[allow(unreachable_code)]
            Op::Trap => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                Err(fatal("trap is only reachable in wasm"))
            }
            Op::StackOverflow => Outcome::details(&recurse(std::hint::black_box(1))),
            Op::LeakLock { name } => {
                let guard = lock(&name, Duration::from_millis(100))?;
                let token = guard.fencing_token();
                std::mem::forget(guard);
                Outcome::details(&json!({ "leaked": name, "token": token }))
            }
            Op::LockThenPanic { name } => {
                let _guard = lock(&name, Duration::from_millis(100))?;
                panic!("panicking while holding {name}");
            }
            Op::Lock { name, timeout_ms } => {
                let guard = lock(&name, Duration::from_millis(timeout_ms))?;
                Outcome::details(&json!({ "token": guard.fencing_token() }))
            }
            Op::SpamLog { lines, len } => {
                let line = "x".repeat(len);
                for _ in 0..lines {
                    info!("{line}");
                }
                Ok(Outcome::none())
            }
            Op::Print { lines } => {
                for i in 0..lines {
                    println!("stdout line {i}");
                    eprintln!("stderr line {i}");
                }
                Ok(Outcome::none())
            }
            Op::FloodStdout { lines, len } => {
                use std::io::Write;
                let mut line = vec![b'z'; len.max(1)];
                if let Some(last) = line.last_mut() {
                    *last = b'\n';
                }
                let per_chunk = (1 << 20) / line.len().max(1) + 1;
                let chunk = line.repeat(per_chunk);
                let mut out = std::io::stdout().lock();
                let mut left = lines;
                while left > 0 {
                    let n = left.min(per_chunk);
                    out.write_all(&chunk[..n * line.len()])?;
                    left -= n;
                }
                out.flush()?;
                Ok(Outcome::none())
            }
            Op::KvFill { keys, bytes } => {
                let value = vec![3u8; bytes];
                let mut written = 0;
                let mut error = None;
                for i in 0..keys {
                    match kv::set(&format!("k{i}"), &value) {
                        Ok(()) => written += 1,
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                Outcome::details(&json!({ "written": written, "error": error }))
            }
            Op::BigOutput { bytes } => Outcome::details(&"y".repeat(bytes)),
            Op::BigKv { bytes } => {
                kv::set("big", &vec![7u8; bytes])?;
                Ok(Outcome::none())
            }
            Op::EmitFlood { name, times } => {
                let (mut accepted, mut refused, mut first_error) = (0u32, 0u32, None);
                for i in 0..times {
                    match event::emit(&name, &json!({ "i": i })) {
                        Ok(_) => accepted += 1,
                        Err(e) => {
                            refused += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                Outcome::details(&json!({
                    "accepted": accepted,
                    "refused": refused,
                    "first_error": first_error,
                }))
            }
        }
    }
}

fn recurse(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    if n == 0 {
        pad[3]
    } else {
        recurse(n + 1).wrapping_add(pad[5])
    }
}

quartzite_sdk::export_job!(Hostile);
