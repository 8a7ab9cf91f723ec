//! The one place that configures wasmtime. Every knob set here says why.
//!
//! One `Engine` serves every run of the node's small modules, and a second
//! one (built with the first module that needs it) the runs of modules with a
//! large initial memory image, which it maps copy-on-write (see
//! [`CowImages`]). Within an engine, compiled code, the pooling allocator's
//! slots and the epoch counter are shared; each run gets a fresh `Store`. A
//! background thread advances the engines' epochs every [`TICK`], which is
//! what lets a run be time-sliced and stopped at its deadline.

use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of timeouts and time slices.
pub const TICK: Duration = Duration::from_millis(10);

/// Engine-wide settings (per node, not per job).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Runs that may be instantiated at once; sizes the pooling allocator. Default 256.
    pub max_concurrent_runs: u32,
    /// The largest memory cap any job may ask for, in bytes. Default 1 GiB.
    pub max_memory_per_run: u64,
    /// Meter fuel so jobs can have a deterministic instruction budget. Costs guest
    /// speed on every run, so it is off unless asked for. Default false.
    pub fuel: bool,
    /// Wasm stack per run, in bytes. Default 512 KiB (wasmtime's default).
    pub max_wasm_stack: usize,
    /// Whether a run's memory starts as a copy-on-write mapping of its
    /// module's initial memory image or as a copy of it. Default
    /// [`CowImages::Auto`]: mapped for modules with an image of 128 KiB or more.
    pub memory_image_cow: CowImages,
    /// Functions a module may define (over all its core modules); a module with
    /// more is refused before compiling, since compile time and memory grow with
    /// them. Default 100,000.
    pub max_module_functions: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrent_runs: 256,
            max_memory_per_run: 1 << 30,
            fuel: false,
            max_wasm_stack: 512 << 10,
            memory_image_cow: CowImages::Auto,
            max_module_functions: 100_000,
        }
    }
}

/// Which modules' runs map their initial memory image copy-on-write.
///
/// A mapping is made and torn down per run, which costs more than copying a
/// tiny image (a Rust no-op's few bytes: 1.3x its runs per second copied) and
/// far less than copying a large one (QuickJS's 0.3 MiB: 1.9x with mapping;
/// the 2.6 to 11 MiB pre-initialized heaps of StarlingMonkey and CPython:
/// 2.6x and 4.3x). A Rust job with 40 KiB of data runs as fast either way.
/// wasmtime makes the choice per engine, so `Auto` keeps a second engine and
/// loads each module into the one its image size picks (BENCHMARKS.md,
/// "Languages").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CowImages {
    /// Mapped when the module's data segments hold at least [`COW_IMAGE_MIN`] bytes.
    #[default]
    Auto,
    /// Mapped for every module.
    On,
    /// Copied for every module.
    Off,
}

/// The smallest initial memory image (bytes of data segments, over the
/// component's core modules) that [`CowImages::Auto`] maps copy-on-write:
/// between the largest measured image that gains nothing from mapping (40 KiB)
/// and the smallest that gains (279 KiB).
pub const COW_IMAGE_MIN: u64 = 128 << 10;

impl CowImages {
    /// Whether a module whose data segments hold `image_bytes` gets the
    /// copy-on-write engine.
    pub fn maps(self, image_bytes: u64) -> bool {
        match self {
            CowImages::Auto => image_bytes >= COW_IMAGE_MIN,
            CowImages::On => true,
            CowImages::Off => false,
        }
    }
}

/// Bytes of each pooled memory and table kept resident (zeroed in place) between runs.
const KEEP_RESIDENT: usize = 32 << 10;

/// Freed memories returned to the kernel together.
const DECOMMIT_BATCH: usize = 32;

/// Builds an engine, mapping initial memory images copy-on-write if `cow`.
///
/// # Errors
///
/// When wasmtime rejects the configuration (e.g. the pooling allocator cannot
/// reserve its address space).
pub fn build(cfg: &EngineConfig, cow: bool) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    // Jobs are components (the WIT contract), never bare core modules.
    config.wasm_component_model(true);
    // Host imports (kv, locks, WASI sleep) await the store or cluster: runs are
    // async so a waiting guest does not hold an OS thread.
    // Stopping guests at a deadline and time-slicing them: epochs are a cheap
    // counter check, unlike fuel, and are meant for untrusted code.
    config.epoch_interruption(true);
    config.consume_fuel(cfg.fuel);
    // A fresh instance per run is the isolation model; pooling makes it ~20 us.
    let mut pool = PoolingAllocationConfig::default();
    let runs = cfg.max_concurrent_runs.max(1);
    // A Rust wasip2 component instantiates a handful of core instances, memories
    // and tables; leave room for a few times that per run.
    pool.total_component_instances(runs);
    pool.total_core_instances(runs.saturating_mul(8));
    pool.total_memories(runs.saturating_mul(2));
    pool.total_tables(runs.saturating_mul(4));
    pool.total_stacks(runs);
    pool.max_memory_size(usize::try_from(cfg.max_memory_per_run).unwrap_or(usize::MAX));
    pool.max_memories_per_component(8);
    pool.max_tables_per_component(16);
    pool.max_core_instances_per_component(32);
    // Reset a freed memory's first pages with memset instead of returning them
    // to the kernel: madvise on a multi-threaded process makes every other core
    // flush its TLB (an inter-processor interrupt per run), which cost more than
    // the run itself with two threads.
    pool.linear_memory_keep_resident(KEEP_RESIDENT);
    pool.table_keep_resident(KEEP_RESIDENT);
    // Return the rest of freed memories to the kernel in batches rather than
    // one run at a time: with two threads this doubled runs per second
    // (BENCHMARKS.md). A slot waits in the batch until it is flushed, which
    // happens when it fills or when the pool has no free slot left.
    pool.decommit_batch_size(DECOMMIT_BATCH.min(runs as usize));
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Copy or map the initial memory (see `CowImages`): a mapping is made and
    // torn down per run (with the same cross-core TLB flush), which for small
    // images costs more than copying them.
    config.memory_init_cow(cow);
    config.max_wasm_stack(cfg.max_wasm_stack);
    // The async fiber stack must hold the wasm stack plus host frames.
    config.async_stack_size(cfg.max_wasm_stack + (1 << 20));
    // Pooled fiber stacks are not zeroed between runs: wasm cannot address the
    // native stack, and zeroing ~1.5 MiB per run would cost more than the run.
    // Compile once per module and keep it; optimize for speed of the jobs.
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    Engine::new(&config)
}

/// The thread that advances the epoch of the node's engines every [`TICK`]
/// until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    engines: Arc<std::sync::Mutex<Vec<wasmtime::EngineWeak>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the thread, ticking `engine`.
    ///
    /// # Errors
    ///
    /// When the thread cannot be spawned.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engines = Arc::new(std::sync::Mutex::new(vec![engine.weak()]));
        let (flag, ticked) = (Arc::clone(&stop), Arc::clone(&engines));
        let thread = std::thread::Builder::new()
            .name("quartzite-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let mut engines = ticked
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    engines.retain(|weak| match weak.upgrade() {
                        Some(engine) => {
                            engine.increment_epoch();
                            true
                        }
                        None => false,
                    });
                    if engines.is_empty() {
                        break;
                    }
                }
            })?;
        Ok(EpochTicker {
            stop,
            engines,
            thread: Some(thread),
        })
    }

    /// Ticks `engine` too from now on.
    pub fn add(&self, engine: &Engine) {
        self.engines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(engine.weak());
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A stable fingerprint of everything that makes compiled code valid for this
/// engine (wasmtime version, target, settings), for naming the on-disk cache.
pub(crate) fn fingerprint(engine: &Engine) -> String {
    use sha2::{Digest, Sha256};
    use std::hash::{Hash, Hasher};

    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..8])
}
