//! The WASM backend's compiled code: one shared [`Engine`] (pooling allocator, copy-on-write
//! memory images, epoch interruption, guests run asynchronously on the host's runtime) and, per bootstrap, an instance template ready to
//! instantiate. Compiled code is kept on disk under `<cache>/wasm/`, named by the module's
//! SHA-256 and the engine's compatibility hash, so a restarted lamina loads instead of
//! compiling; anything that does not load (another wasmtime, other settings, a damaged file)
//! is simply compiled again. A module file's digest is itself remembered by the file's
//! identity (device, inode, size, modification and change times), so the first invocation
//! after a restart neither reads nor hashes a module it has seen.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::Limits;

/// How many instances may be alive at once across all functions; each linear memory slot
/// reserves address space (not memory) up front.
const POOL_MEMORIES: u32 = 512;

/// How much of a linear memory is reset in place rather than returned to the kernel: a
/// typical guest's stack, data and first heap pages.
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 4 << 20;
/// The same for tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Building the engine failed (the host refused the pool's address-space reservation).
#[derive(Debug, thiserror::Error)]
#[error("creating the wasmtime engine: {0}")]
pub struct EngineError(String);

impl EngineError {
    pub(super) fn from_io(e: std::io::Error) -> EngineError {
        EngineError(e.to_string())
    }
}

/// The shared engine.
pub fn engine() -> Result<Engine, EngineError> {
    let mut pool = PoolingAllocationConfig::default();
    // A component takes several core instances and tables (its module, WASI adapter, shims).
    pool.total_memories(POOL_MEMORIES)
        .total_core_instances(POOL_MEMORIES * 4)
        .total_component_instances(POOL_MEMORIES)
        .total_tables(POOL_MEMORIES * 4)
        .total_stacks(POOL_MEMORIES)
        // A slot's memory stays mapped between instances and is put back by copying only the
        // pages the last one touched (found with PAGEMAP_SCAN where the kernel has it, Linux
        // 6.7+): no page faults in the next instance, no `madvise` and its TLB shootdowns
        // across cores. Past this size a slot is reset with `madvise` as before.
        .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .epoch_interruption(true);
    Engine::new(&config).map_err(|e| EngineError(format!("{e:#}")))
}

/// What a store holds for a WASI preview 1 module.
pub struct P1Host {
    pub(super) wasi: WasiP1Ctx,
    pub(super) limits: Limits,
}

/// What a store holds for a WASI preview 2 component.
pub struct P2Host {
    pub(super) ctx: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: Limits,
}

impl WasiView for P2Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// A bootstrap ready to instantiate: imports resolved once, so each invocation only builds a
/// store and instantiates.
#[derive(Clone)]
pub enum Guest {
    /// A WASI preview 1 command module (`_start`).
    Module(wasmtime::InstancePre<P1Host>),
    /// A WASI preview 2 command component (`wasi:cli/run`).
    Component(CommandPre<P2Host>),
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Guest::Module(_) => "Guest::Module",
            Guest::Component(_) => "Guest::Component",
        })
    }
}

/// Which of the two binary formats `bytes` is, from the header's version and layer fields.
fn is_component(bytes: &[u8]) -> Option<bool> {
    match bytes.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(false),
        [0, b'a', b's', b'm', _, _, 1, 0] => Some(true),
        _ => None,
    }
}

/// The on-disk store of compiled code.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
    /// The engine's compatibility hash, hex: compiled code from another wasmtime or other
    /// settings lives under another name.
    engine_key: String,
}

impl CodeCache {
    /// The cache under `root/wasm`.
    pub fn new(engine: &Engine, root: &Path) -> CodeCache {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CodeCache {
            dir: root.join("wasm"),
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    /// Loads (compiling on a miss) the bootstrap at `path` and links it against WASI. The
    /// error is the reason, for `Runtime.InvalidEntrypoint`.
    pub fn load(&self, engine: &Engine, path: &Path) -> Result<Guest, String> {
        let read =
            |path: &Path| std::fs::read(path).map_err(|e| format!("reading the module: {e}"));
        let identity = self.identity_file(path);
        let remembered = identity.as_ref().and_then(|identity| {
            let digest = std::fs::read_to_string(identity).ok()?;
            let component = is_component(&read_header(path)?)?;
            Some((digest, component))
        });
        let mut bytes = None;
        let (digest, component) = match remembered {
            Some(known) => known,
            None => {
                let read = bytes.insert(read(path)?);
                let component =
                    is_component(read).ok_or("not a WebAssembly module or component")?;
                let digest = hex(&Sha256::digest(&read[..]));
                if let Some(identity) = &identity {
                    self.remember(identity, &digest);
                }
                (digest, component)
            }
        };
        let file = self.dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        let compiled = match self.deserialize(engine, &file, component) {
            Some(compiled) => compiled,
            None => {
                let bytes = match bytes {
                    Some(bytes) => bytes,
                    None => read(path)?,
                };
                let artifact = if component {
                    engine.precompile_component(&bytes)
                } else {
                    engine.precompile_module(&bytes)
                }
                .map_err(|e| format!("{e:#}"))?;
                match self.store(&file, &artifact) {
                    // Loaded back from the file: its pages are then mapped, not copied.
                    Ok(()) => self.deserialize(engine, &file, component),
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "cannot cache compiled wasm");
                        None
                    }
                }
                .map_or_else(|| compile(engine, &bytes, component), Ok)?
            }
        };
        link(engine, compiled)
    }

    /// Where the digest of the module at `path` is remembered: named by a hash of the path and
    /// the file's identity, which any change to the file's content changes (its change time
    /// cannot be set back).
    fn identity_file(&self, path: &Path) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let identity = format!(
            "{}\0{}:{}:{}:{}.{}:{}.{}",
            path.display(),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        );
        Some(
            self.dir
                .join("by-file")
                .join(hex(&Sha256::digest(identity))),
        )
    }

    /// Records a module's digest under its identity; a failure only costs a hash next time.
    fn remember(&self, identity: &Path, digest: &str) {
        let written = identity
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let staged =
                    tempfile::NamedTempFile::new_in(identity.parent().unwrap_or(&self.dir))?;
                std::fs::write(staged.path(), digest)?;
                staged.persist(identity).map_err(|e| e.error).map(drop)
            });
        if let Err(e) = written {
            tracing::debug!(file = %identity.display(), error = %e, "cannot remember a module's digest");
        }
    }

    /// The cached compilation at `file`, if there is one this engine accepts.
    fn deserialize(&self, engine: &Engine, file: &Path, component: bool) -> Option<Compiled> {
        if !file.is_file() {
            return None;
        }
        // SAFETY: the file is in lamina's own cache directory (trusted, see SECURITY.md),
        // written only by `store` below from `Engine::precompile_*` output and published by
        // an atomic rename, never modified in place afterwards; wasmtime itself refuses
        // artifacts of another version or configuration.
        let loaded = unsafe {
            if component {
                Component::deserialize_file(engine, file).map(Compiled::Component)
            } else {
                Module::deserialize_file(engine, file).map(Compiled::Module)
            }
        };
        loaded
            .inspect_err(|e| tracing::debug!(file = %file.display(), error = %e, "recompiling"))
            .ok()
    }

    /// Writes an artifact next to its final name, then renames it into place.
    fn store(&self, file: &Path, artifact: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let staged = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::fs::write(staged.path(), artifact)?;
        staged.persist(file).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first bytes of a file, enough to tell a module from a component.
fn read_header(path: &Path) -> Option<[u8; 8]> {
    use std::io::Read;
    let mut header = [0; 8];
    std::fs::File::open(path)
        .ok()?
        .read_exact(&mut header)
        .ok()?;
    Some(header)
}

enum Compiled {
    Module(Module),
    Component(Component),
}

/// Compiles in memory (when the cache cannot be written).
fn compile(engine: &Engine, bytes: &[u8], component: bool) -> Result<Compiled, String> {
    if component {
        Component::new(engine, bytes).map(Compiled::Component)
    } else {
        Module::new(engine, bytes).map(Compiled::Module)
    }
    .map_err(|e| format!("{e:#}"))
}

/// Resolves the guest's imports against WASI once.
fn link(engine: &Engine, compiled: Compiled) -> Result<Guest, String> {
    let failed = |e: wasmtime::Error| format!("{e:#}");
    match compiled {
        Compiled::Module(module) => {
            let mut linker = wasmtime::Linker::<P1Host>::new(engine);
            wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h| &mut h.wasi).map_err(failed)?;
            if module.get_export("_start").is_none() {
                return Err("not a WASI command: the module exports no `_start`".into());
            }
            linker
                .instantiate_pre(&module)
                .map(Guest::Module)
                .map_err(failed)
        }
        Compiled::Component(component) => {
            let mut linker = wasmtime::component::Linker::<P2Host>::new(engine);
            wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(failed)?;
            let pre = linker.instantiate_pre(&component).map_err(failed)?;
            CommandPre::new(pre).map(Guest::Component).map_err(|e| {
                format!("not a WASI command component (no `wasi:cli/run` export): {e:#}")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_modules_from_components_by_their_header() {
        assert_eq!(is_component(b"\0asm\x01\0\0\0rest"), Some(false));
        assert_eq!(is_component(b"\0asm\x0d\0\x01\0rest"), Some(true));
        assert_eq!(is_component(b"#!/bin/sh\n"), None);
        assert_eq!(is_component(b"\0asm"), None);
    }

    /// A WASI command that does nothing, exporting `name` (six bytes) as its entry point.
    fn module_exporting(name: &[u8; 6]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&[0x01, 0x04, 0x01, 0x60, 0x00, 0x00]); // type: () -> ()
        m.extend_from_slice(&[0x03, 0x02, 0x01, 0x00]); // one function of that type
        m.extend_from_slice(&[0x07, 0x0a, 0x01, 0x06]); // one export, a six-byte name
        m.extend_from_slice(name);
        m.extend_from_slice(&[0x00, 0x00]); // function 0
        m.extend_from_slice(&[0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b]); // its body: nothing
        m
    }

    #[test]
    fn a_module_rewritten_in_place_is_not_taken_for_the_one_remembered() {
        let engine = engine().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(&engine, &dir.path().join("cache"));
        let path = dir.path().join("bootstrap.wasm");
        std::fs::write(&path, module_exporting(b"_start")).unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(cache.load(&engine, &path).is_ok());
        // Seen again: loaded by what was remembered of the file.
        assert!(cache.load(&engine, &path).is_ok());
        assert_eq!(
            std::fs::read_dir(dir.path().join("cache/wasm/by-file"))
                .unwrap()
                .count(),
            1
        );
        // The same size, the same modification time, other content: only the change time
        // tells, and the new content (no entry point) must be what is judged.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Write::write_all(&mut &file, &module_exporting(b"_stArt")).unwrap();
        file.set_modified(modified).unwrap();
        drop(file);
        let Err(err) = cache.load(&engine, &path) else {
            panic!("the old code was taken for the new content");
        };
        assert!(err.contains("no `_start`"), "{err}");
    }
}
