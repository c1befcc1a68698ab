//! The wasmtime side: one `Engine` with the pooling allocator, every
//! component compiled once (and cached on disk across processes), linked
//! against WASI, wasi-http and Spin's interfaces, and pre-instantiated so a
//! request only pays for a fresh instance.

use crate::bindings;
use crate::manifest::App;
use crate::outbound::AllowedHosts;
use crate::pg::PgPools;
use crate::state::{ComponentContext, InstanceState};
use crate::variables::Resolver;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

/// A loaded component: its context and its pre-instantiated form.
pub struct LoadedComponent {
    pub context: Arc<ComponentContext>,
    pub pre: InstancePre<InstanceState>,
}

impl LoadedComponent {
    /// A fresh store for one request or event, as Spin makes per instance.
    pub fn new_store(&self) -> Store<InstanceState> {
        Store::new(self.pre.engine(), InstanceState::new(self.context.clone()))
    }
}

/// Host settings that are not part of the app (Spin's runtime config).
pub struct Settings {
    /// Where compiled components are cached between runs.
    pub cache_dir: PathBuf,
    /// Connections per Postgres pool (per component, per address).
    pub pg_pool_size: usize,
    /// `.wasm` files to load instead of a component's `source` (test builds).
    pub source_overrides: HashMap<String, PathBuf>,
    /// Random delay before every store call (race-window tests).
    pub store_delay_max: std::time::Duration,
}

/// Every component of the app, by id.
pub struct Runtime {
    pub components: HashMap<String, Arc<LoadedComponent>>,
}

fn engine() -> Result<Engine> {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(2_000)
        .total_core_instances(4_000)
        .total_memories(4_000)
        .total_tables(4_000)
        .max_memory_size(256 << 20)
        // Reset a freed instance's memory with memset (or a pagemap scan)
        // rather than madvise: no TLB shootdown and no page faults on reuse.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .decommit_batch_size(32);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:?}"))
}

fn linker(engine: &Engine) -> Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    bindings::spin::spin::postgres::postgres::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    bindings::spin::fermyon::spin::redis::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    bindings::spin::fermyon::spin::variables::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(linker)
}

/// Compile `wasm`, or load the machine code a previous process cached for
/// the same bytes and engine settings.
fn compile(engine: &Engine, wasm_path: &Path, cache_dir: &Path) -> Result<Component> {
    let wasm = std::fs::read(wasm_path).with_context(|| {
        format!(
            "cannot read component {} (build it with ./dev build)",
            wasm_path.display()
        )
    })?;
    let mut hasher = Sha256::new();
    hasher.update(&wasm);
    std::hash::Hash::hash(
        &engine.precompile_compatibility_hash(),
        &mut HashWriter(&mut hasher),
    );
    let key: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let cached = cache_dir.join(format!("{key}.cwasm"));
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of this same
        // engine configuration (its hash is in the name) and only this host
        // writes into the cache directory.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &cached) } {
            return Ok(component);
        }
    }
    let component = Component::new(engine, &wasm)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| format!("cannot compile {}", wasm_path.display()))?;
    if std::fs::create_dir_all(cache_dir).is_ok() {
        if let Ok(bytes) = component.serialize() {
            // Write then rename, so a concurrent reader never sees half a file.
            let partial = cache_dir.join(format!("{key}.{}.partial", std::process::id()));
            if std::fs::write(&partial, bytes).is_ok() {
                let _ = std::fs::rename(&partial, &cached);
            }
        }
    }
    Ok(component)
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Where compiled components are cached unless told otherwise.
pub fn default_cache_dir(app: &App) -> PathBuf {
    app.dir.join("target").join("edge-host-cache")
}

impl Runtime {
    /// Load every component the triggers use, resolving variables and
    /// allow-lists up front so configuration errors stop start-up.
    pub fn load(app: &App, resolver: &Resolver, settings: &Settings) -> Result<Runtime> {
        let engine = engine()?;
        let linker = linker(&engine)?;
        let mut components = HashMap::new();
        for (id, decl) in &app.manifest.component {
            let variables = resolver
                .component_variables(&decl.variables)
                .with_context(|| format!("component {id:?}: variables"))?;
            let allowed = decl
                .allowed_outbound_hosts
                .iter()
                .map(|entry| resolver.render(entry))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;
            let allowed_hosts = AllowedHosts::parse(&allowed)
                .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;
            let source = settings
                .source_overrides
                .get(id)
                .cloned()
                .unwrap_or_else(|| app.source_path(decl));
            let component = compile(&engine, &source, &settings.cache_dir)?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .with_context(|| format!("component {id:?} imports something this host does not provide"))?;
            let context = Arc::new(ComponentContext {
                id: id.clone(),
                allowed_hosts,
                variables,
                environment: decl
                    .environment
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                pg_pools: PgPools::new(settings.pg_pool_size),
                idle_redis: Default::default(),
                store_delay_max: settings.store_delay_max,
            });
            components.insert(id.clone(), Arc::new(LoadedComponent { context, pre }));
        }
        Ok(Runtime { components })
    }
}

/// The cron world's pre-instantiated form for a component.
pub fn cron_pre(component: &LoadedComponent) -> Result<bindings::cron::SpinCronPre<InstanceState>> {
    bindings::cron::SpinCronPre::new(component.pre.clone())
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .with_context(|| {
            format!(
                "component {:?} does not export handle-cron-event",
                component.context.id
            )
        })
}
