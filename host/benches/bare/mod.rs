//! The bare-wasmtime floor the runtime benchmark compares the host path with:
//! the same engine ([`quartzite::runtime::engine::build`]), a store holding
//! only WASI, instantiate and call `run`, drop. It has bindings of its own to
//! `wit/`, so the library exports nothing for benches.

use ::quartzite::runtime::engine::{self, CowImages, EngineConfig};
use ::quartzite::runtime::{WIT_PACKAGE, WIT_VERSION};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "quartzite:job/job",
    imports: { default: async | trappable },
    exports: { default: async },
});

use self::quartzite::job::types as wit;

struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A component pre-instantiated on a bare linker (WASI p2 only).
pub struct BareFloor {
    engine: Engine,
    pre: JobPre<Bare>,
    _ticker: engine::EpochTicker,
}

impl BareFloor {
    /// Builds the floor for a component that imports no `quartzite:job/host` functions.
    ///
    /// # Errors
    ///
    /// When the component does not compile or link.
    pub fn new(bytes: &[u8], config: &EngineConfig) -> wasmtime::Result<Self> {
        let engine = engine::build(config, config.memory_image_cow == CowImages::On)?;
        let mut linker: Linker<Bare> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // The types-only interface: nothing to define but the instance itself.
        linker.instance(&format!("{}/types@{}", WIT_PACKAGE, WIT_VERSION))?;
        let component = Component::from_binary(&engine, bytes)?;
        let pre = JobPre::new(linker.instantiate_pre(&component)?)?;
        let ticker = engine::EpochTicker::start(&engine)?;
        Ok(BareFloor {
            engine,
            pre,
            _ticker: ticker,
        })
    }

    /// One fresh store, instantiate, `run`, drop.
    ///
    /// # Errors
    ///
    /// When the guest traps.
    pub async fn call_once(&self) -> wasmtime::Result<bool> {
        let mut store = Store::new(
            &self.engine,
            Bare {
                wasi: WasiCtxBuilder::new().build(),
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(1_000);
        let job = self.pre.instantiate_async(&mut store).await?;
        let ctx = wit::Context {
            job_key: "bench/noop".into(),
            trigger_key: "bench/noop".into(),
            fire_id: "bench".into(),
            scheduled_at: 0,
            fired_at: 0,
            attempt: 1,
            recovering: false,
            data: String::new(),
        };
        let result = job
            .quartzite_job_runner()
            .call_run(&mut store, &ctx)
            .await?;
        Ok(result.is_ok())
    }
}
