//! Mounting an image straight from a registry (`docker://HOST/REPO:TAG`), lazily, through the
//! local store (docs/mount.chunkfs.8.md, "Registry images"; docs/lazy.md §8).
//!
//! 1. **Prepare** ([`prepare`]): the reference is resolved (`remote::open`: a digest the store
//!    has needs no network; a tag whose registry is unreachable falls back to the digest the
//!    store recorded), the manifest, config and metadata are checked and kept in the store;
//!    the store plans where every chunk is read from (a frame present in any pack of the
//!    store, or the image's own pack, to be filled), with 48-bit extents; the descriptor is
//!    translated from the plan's devices and locations and stored in the store (a disk
//!    filesystem: file-backed EROFS refuses tmpfs); and, for the FUSE reader, one digest
//!    table is synthesized from the checked metadata and the plan — every chunk at its
//!    pack-file offset with the metadata's sha256 — never from the packs' own indexes.
//! 2. **Choose the reader** ([`crate::mount::features::decide_lazy`]): the kernel alone when
//!    every frame the image reads is present; the kernel with the fanotify filler where the
//!    store's filesystem allows pre-content marks and the kernel's EROFS has 48-bit extents;
//!    else the FUSE reader with lazily filled devices.
//! 3. **Mount**: for the lazy kernel path, the filler daemon is started first and marks the
//!    packs, then EROFS is mounted file-backed with one `device=` per pack file (the store's
//!    disjoint windows make that safe), then the filler is told the mount's id so that it
//!    ends with it. The mount's record in the store (the plan's lease) names the daemon and
//!    the mount; `/run/chunkfs/lazy/ID.json` tells `chunkfs status` and `chunkfs refill`.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chunkfs_distribution::registry::{AuthEnv, Client, Credentials, ImageRef};
use chunkfs_distribution::remote;
use chunkfs_distribution::store::{ChunkSource, MAX_REQUEST, Plan, Store};
use chunkfs_format::Classify;
use chunkfs_format::digest::Digest;
use chunkfs_format::model::ChunkInfo;
use chunkfs_format::translate::{self, ChunkLocation, ExtentLayout};

use super::features::{self, KernelCaps};
use super::options::{Options, Prefetch, Pull, VerifyLevel};
use super::verify::{Backing, Prepared, Primary};
use super::{Control, Error, ErrorKind, Log, MountInfo, ReaderUsed, fuse, kernel, mountinfo};
use crate::lazy::status::{MountRecord, PlanSummary};
use crate::lazy::work::{self, AuthEnvSpec, FrameGroup, LazySpec, RegistrySpec};

/// How long a reader of a lazy kernel mount may wait for its range before the filler answers
/// EIO (the registry client's own deadlines end a fetch sooner).
const FILLER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// What a registry image's mount needs besides the files of [`Prepared`].
pub struct RegistryPrepared {
    /// The store.
    pub store: Store,
    /// The reference pinned by its manifest digest.
    pub pinned: String,
    /// The manifest's digest.
    pub manifest: Digest,
    /// Set when the registry could not be reached and the store's copy was used: why.
    pub offline: Option<String>,
    /// The plan (its lease is the mount's record in the store).
    pub plan: Plan,
    /// How the plan placed the chunks.
    pub summary: PlanSummary,
    /// What the daemons are given.
    pub spec: LazySpec,
    /// Credentials given as an option, for the daemons (through a memfd).
    pub credentials: Option<Credentials>,
    /// The digest table of every chunk at its pack-file offset (the FUSE reader's).
    pub tables: Vec<u8>,
    /// True if every frame the image reads is present: no daemon needed on the kernel path.
    pub complete: bool,
    /// Whether the lazy kernel path works here (the store's filesystem allows pre-content
    /// marks), or why not.
    pub lazy_kernel: Result<(), String>,
}

impl std::fmt::Debug for RegistryPrepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryPrepared")
            .field("pinned", &self.pinned)
            .field("summary", &self.summary)
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

fn lib_error(e: &(impl Classify + std::fmt::Display)) -> Error {
    Error::from_library(e, "")
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The registry options of `opts` as the daemons get them (no secrets).
fn registry_spec(opts: &Options) -> RegistrySpec {
    let r = &opts.registry;
    RegistrySpec {
        tls_verify: r.tls_verify,
        cert_dir: r.cert_dir.clone(),
        plain_http: r.plain_http,
        authfile: r.authfile.clone(),
        auth_env: AuthEnvSpec::from(&AuthEnv::from_env()),
    }
}

/// Resolves, checks and plans `reference` (see the module documentation).
pub fn prepare(reference: &ImageRef, opts: &Options, log: &Log) -> Result<Prepared, Error> {
    let r = &opts.registry;
    let display = reference.to_string();
    let mut timings = Vec::new();
    let t = Instant::now();
    let mut store = Store::open(&r.store).map_err(|e| lib_error(&e))?;
    if r.store_max.is_some() {
        store.set_max_size(r.store_max);
    }
    let registry = registry_spec(opts);
    let client = Client::new(
        reference,
        registry.options(r.creds.clone(), work::lazy_limits()),
    )
    .map_err(|e| lib_error(&e))?;
    let mut image =
        remote::open(&store, &client, reference, r.platform.as_ref()).map_err(|e| lib_error(&e))?;
    match &image.offline {
        None => log.info(format_args!(
            "resolved {display} to manifest {} (metadata {})",
            image.manifest_digest, image.metadata_digest
        )),
        Some(why) => log.info(format_args!(
            "offline: {why}; manifest {} (metadata {})",
            image.manifest_digest, image.metadata_digest
        )),
    }
    super::verify::check_pin(&display, &image.metadata_digest, opts)?;
    timings.push(("manifest, config and metadata checked", t.elapsed()));

    let t = Instant::now();
    let plan = image
        .plan(&store, &client, ExtentLayout::Bit48)
        .map_err(|e| lib_error(&e))?;
    let summary = summarize(&plan, &image.image.chunks);
    log.info(format_args!(
        "plan: {} chunks: {} in the store for this image, {} shared with other images, {} to fetch ({} bytes in {} frames); {} packs",
        summary.chunks,
        summary.own,
        summary.shared,
        summary.fetch,
        summary.missing_bytes,
        summary.missing_frames,
        plan.devices.len()
    ));
    timings.push(("planned in the store", t.elapsed()));

    let t = Instant::now();
    let built = translate::standalone(
        &image.image,
        &plan.locations,
        plan.extra_devices(),
        ExtentLayout::Bit48,
    )
    .map_err(|e| {
        Error::new(
            ErrorKind::of(e.class()),
            format!("{display}: no EROFS descriptor can be built: {e}"),
        )
    })?;
    let mut bytes = Vec::new();
    built.write_standalone(&mut bytes).map_err(|e| {
        Error::new(
            ErrorKind::Corrupt,
            format!("{display}: cannot build the EROFS descriptor: {e}"),
        )
    })?;
    let key = Digest::of(&bytes);
    let mut plan = plan;
    let descriptor = {
        // gc removes descriptors no record names: hold it off until the record names this one.
        let _setup = store.setup().map_err(|e| lib_error(&e))?;
        let path = store
            .put_descriptor(&key, &bytes)
            .map_err(|e| lib_error(&e))?;
        plan.lease_mut()
            .set_descriptor(key)
            .map_err(|e| lib_error(&e))?;
        path
    };
    timings.push(("EROFS descriptor built", t.elapsed()));

    let chunks = image.image.chunks.len();
    let mut chunks_checked = 0;
    if opts.verify == VerifyLevel::Full {
        let t = Instant::now();
        full_check(&store, &plan, &client, &display, log)?;
        chunks_checked = chunks;
        timings.push(("every chunk fetched and checked (a pull)", t.elapsed()));
    }
    let complete = plan
        .absent_ranges()
        .map_err(|e| lib_error(&e))?
        .iter()
        .all(Vec::is_empty);

    let tables = digest_table(&image.image.chunks, &plan.locations);
    let used: Vec<Vec<u32>> = plan
        .frames_used()
        .into_iter()
        .map(|f| {
            f.into_iter()
                .filter_map(|i| u32::try_from(i).ok())
                .collect()
        })
        .collect();
    let prefetch_list = match &r.prefetch {
        Prefetch::None => Vec::new(),
        Prefetch::Image => image.image.prefetch.clone(),
        Prefetch::File(path) => read_prefetch_file(path, &image.image)?,
    };
    let prefetch = frame_groups(&plan, &prefetch_list);
    if !prefetch_list.is_empty() {
        log.info(format_args!(
            "prefetch: {} chunks in {} requests at most",
            prefetch_list.len(),
            prefetch.len()
        ));
    }
    let spec = LazySpec {
        id: plan.lease().id().to_owned(),
        store: store.root().to_owned(),
        reference: image.pinned.to_string(),
        registry,
        packs: plan.devices.iter().map(|p| p.digest().to_hex()).collect(),
        used,
        prefetch,
        background: r.pull == Pull::Background,
        record: opts.record.clone(),
    };
    let lazy_kernel = crate::lazy::supported(store.root()).map_err(|why| why.to_string());

    let primary = Backing::open(&descriptor, false)?;
    let devices = plan
        .devices
        .iter()
        .map(|p| Backing::open(p.path(), false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared {
        display,
        metadata_digest: image.metadata_digest,
        incompat: super::verify::incompat_of(bytes.get(1024..).unwrap_or_default()),
        primary: Primary::Image(primary),
        devices,
        digests: Vec::new(),
        extents: ExtentLayout::Bit48,
        data_in_primary: false,
        chunks,
        chunks_checked,
        timings,
        layout_lock: None,
        disjoint_devices: true,
        file_backed_only: false,
        registry: Some(Box::new(RegistryPrepared {
            pinned: image.pinned.to_string(),
            manifest: image.manifest_digest,
            offline: image.offline.clone(),
            store,
            plan,
            summary,
            spec,
            credentials: r.creds.clone(),
            tables,
            complete,
            lazy_kernel,
        })),
    })
}

/// How the plan placed the chunks.
fn summarize(plan: &Plan, chunks: &[ChunkInfo]) -> PlanSummary {
    let mut s = PlanSummary {
        chunks: chunks.len() as u64,
        own: plan.stats.own,
        shared: plan.stats.shared,
        fetch: plan.stats.fetch,
        missing_frames: plan.missing_frames,
        missing_bytes: plan.missing_bytes,
        present_bytes: 0,
    };
    for (src, loc) in plan.sources.iter().zip(&plan.locations) {
        if *src != ChunkSource::Fetch {
            s.present_bytes += u64::from(loc.stored_len);
        }
    }
    s
}

/// `verify=full`: every frame the image reads fetched now and every one of them read back and
/// checked. Not a pin: the mount's record keeps the frames while it is mounted; `chunkfs pull`
/// keeps an image after that.
fn full_check(
    store: &Store,
    plan: &Plan,
    client: &Client,
    display: &str,
    log: &Log,
) -> Result<(), Error> {
    let report = store
        .fetch_all(plan, client, &mut |_, _| {})
        .map_err(|e| lib_error(&e))?;
    log.info(format_args!(
        "verify=full: fetched {} bytes in {} requests",
        report.fetched_bytes, report.requests
    ));
    for (pack, used) in plan.devices.iter().zip(plan.frames_used()) {
        let bad = pack.check_present().map_err(|e| lib_error(&e))?;
        if let Some((i, problem)) = bad.into_iter().find(|(i, _)| used.binary_search(i).is_ok()) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{display}: verify=full: frame {i} of pack {} in the store: {problem}; refusing to mount it",
                    pack.digest()
                ),
            ));
        }
    }
    Ok(())
}

/// One digest table (docs/descriptor.md, "Digest table") listing every chunk at its location,
/// with the metadata's sha256 and length, sorted by device and offset.
pub fn digest_table(chunks: &[ChunkInfo], locations: &[ChunkLocation]) -> Vec<u8> {
    let mut pairs: Vec<(ChunkLocation, ChunkInfo)> = locations
        .iter()
        .copied()
        .zip(chunks.iter().cloned())
        .collect();
    pairs.sort_by_key(|(l, _)| (l.device, l.offset));
    pairs.dedup_by_key(|(l, _)| (l.device, l.offset));
    let (locs, infos): (Vec<ChunkLocation>, Vec<ChunkInfo>) = pairs.into_iter().unzip();
    chunkfs_format::digest_table::encode(&infos, &locs)
}

/// The chunk indices a prefetch list file names, in its order (docs/format.md §3.6: the
/// file `chunkfs pack --prefetch` reads; digests not in the image are ignored).
fn read_prefetch_file(
    path: &Path,
    image: &chunkfs_format::model::Image,
) -> Result<Vec<u32>, Error> {
    use chunkfs_format::Classify as _;
    let digests = chunkfs_format::prefetch::read(path).map_err(|e| {
        let kind = match e.class() {
            chunkfs_format::ErrorClass::Io => ErrorKind::Io,
            _ => ErrorKind::Usage,
        };
        Error::new(kind, format!("prefetch={e}"))
    })?;
    Ok(chunkfs_format::prefetch::resolve(image, &digests).0)
}

/// The frames of `chunks` (indices, first-read order) as groups of adjacent frames of one
/// device, each at most one request: the prefetch replay's work, in order.
pub fn frame_groups(plan: &Plan, chunks: &[u32]) -> Vec<FrameGroup> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<FrameGroup> = Vec::new();
    for &c in chunks {
        let Some(loc) = plan.locations.get(c as usize) else {
            continue;
        };
        let Some(k) = usize::from(loc.device).checked_sub(1) else {
            continue;
        };
        let Some(pack) = plan.devices.get(k) else {
            continue;
        };
        let (Ok(device), e) = (u16::try_from(k), pack.entries()) else {
            continue;
        };
        for f in pack.frames_in(loc.offset..loc.offset + u64::from(loc.stored_len)) {
            let Ok(f32) = u32::try_from(f) else { continue };
            if !seen.insert((k, f)) {
                continue;
            }
            let fits = |g: &FrameGroup| {
                let first = e.get(g.first as usize).map_or(0, |x| x.offset);
                e.get(f)
                    .is_some_and(|x| x.offset + u64::from(x.stored_len) - first <= MAX_REQUEST)
            };
            match out.last_mut() {
                Some(g) if g.device == device && g.end == f32 && fits(g) => g.end = f32 + 1,
                _ => out.push(FrameGroup {
                    device,
                    first: f32,
                    end: f32 + 1,
                }),
            }
        }
    }
    out
}

/// Mounts a prepared registry image at `target` (see the module documentation).
pub fn mount(
    mut p: Prepared,
    target: &Path,
    opts: &Options,
    ctl: &Control,
    log: &Log,
    start: Instant,
) -> Result<MountInfo, Error> {
    let Some(reg) = p.registry.take() else {
        return Err(Error::new(ErrorKind::Usage, "not a registry image"));
    };
    let caps = KernelCaps::probe();
    // Recording on the kernel path needs the filler's events, complete image or not.
    let decision = features::decide_lazy(
        opts.reader,
        &caps,
        p.incompat,
        reg.complete && opts.record.is_none(),
        &reg.lazy_kernel,
    )
    .map_err(|m| Error::new(ErrorKind::Unsupported, m))?;
    let reader_name = match (decision.kernel, decision.filler) {
        (true, true) => "kernel+filler",
        (true, false) => "kernel",
        (false, _) => "fuse",
    };
    log.info(format_args!("reader={reader_name}: {}", decision.reason));
    let mut info = MountInfo {
        source: p.display.clone(),
        target: target.to_owned(),
        reader: ReaderUsed::None,
        reason: decision.reason.clone(),
        metadata_digest: p.metadata_digest,
        chunks_checked: (p.chunks_checked, p.chunks),
        timings: p.timings.clone(),
    };
    if ctl.fake {
        log.info(format_args!("-f: not mounting"));
        return Ok(info);
    }
    let exe = ctl.daemon_exe.clone().unwrap_or_else(fuse::default_exe);
    let t = Instant::now();
    let mut reader = reader_name;
    let daemon_pid;
    let fuse_mount = |p: &mut Prepared, reg: &RegistryPrepared| -> Result<i32, Error> {
        if !caps.fuse {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "the image is not complete in the store and the kernel has no FUSE (/dev/fuse)",
            ));
        }
        p.file_backed_only = false;
        fuse::mount_lazy(p, reg, target, opts, &exe, log)
    };
    if decision.kernel {
        p.file_backed_only = decision.filler;
        let attempt = if decision.filler {
            kernel_with_filler(&p, &reg, target, opts, &exe, log)
        } else {
            kernel::mount(&p, target, opts, log).map(|k| (k, None))
        };
        match attempt {
            Ok((k, filler)) => {
                daemon_pid = filler;
                info.reader = ReaderUsed::Kernel(kernel::KernelMount { filler, ..k });
            }
            Err(e) if decision.fallback && e.kind() == ErrorKind::Mount => {
                log.info(format_args!("{e}; using the FUSE reader instead"));
                info.reason = format!("the kernel refused the mount: {e}");
                reader = "fuse";
                let pid = fuse_mount(&mut p, &reg).map_err(|f| {
                    Error::new(
                        f.kind(),
                        format!("{e}; and the FUSE reader failed too: {f}"),
                    )
                })?;
                daemon_pid = Some(pid);
                info.reader = ReaderUsed::Fuse { pid };
            }
            Err(e) => return Err(e),
        }
    } else {
        let pid = fuse_mount(&mut p, &reg)?;
        daemon_pid = Some(pid);
        info.reader = ReaderUsed::Fuse { pid };
    }
    info.timings.push(("mounted", t.elapsed()));
    record(reg, &p, target, reader, &info, daemon_pid, log);
    log.info(format_args!(
        "{} mounted on {} in {:.1} ms",
        info.source,
        target.display(),
        ms(start.elapsed())
    ));
    Ok(info)
}

/// The lazy kernel path: the filler marks the packs, the kernel mounts, the filler learns
/// the mount. Returns the kernel mount and the filler's pid.
fn kernel_with_filler(
    p: &Prepared,
    reg: &RegistryPrepared,
    target: &Path,
    opts: &Options,
    exe: &Path,
    log: &Log,
) -> Result<(kernel::KernelMount, Option<i32>), Error> {
    let io = |what: &str, e: std::io::Error| Error::new(ErrorKind::Io, format!("{what}: {e}"));
    let spec = reg.spec.to_memfd().map_err(|e| io("memfd", e))?;
    let creds = reg
        .credentials
        .as_ref()
        .map(work::credentials_memfd)
        .transpose()
        .map_err(|e| io("memfd", e))?;
    let (control_r, control_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe", e.into()))?;
    let (control_r, mut control_w) = (File::from(control_r), File::from(control_w));
    log.info(format_args!("starting the filler ({})", exe.display()));
    let started = crate::lazy::daemon::start_daemon(
        exe,
        &[],
        &crate::lazy::daemon::DaemonOptions {
            mounts: Vec::new(),
            copies: Vec::new(),
            cfs_frames: false,
            workers: None,
            deadline: Some(FILLER_DEADLINE),
            background: false,
            detach: true,
            log: opts.debug,
            store: Some((&spec, creds.as_ref())),
            control: Some(&control_r),
        },
    )
    .map_err(|e| Error::new(ErrorKind::Mount, e.to_string()))?;
    drop(control_r);
    log.info(format_args!(
        "the filler (pid {}) marked the packs",
        started.pid
    ));
    // On failure the control pipe closes unwritten: the filler stops and exits.
    let k = kernel::mount(p, target, opts, log)?;
    let id = mountinfo::mounted_at(target)
        .ok()
        .flatten()
        .map_or(0, |m| m.id);
    let sysfs = File::open(target)
        .ok()
        .and_then(|root| crate::lazy::fanotify::sysfs_path(root.as_fd()).ok())
        .unwrap_or_default();
    if writeln!(control_w, "mounted {id} {sysfs}").is_err() {
        log.info(format_args!(
            "the filler exited before it was told the mount"
        ));
    }
    Ok((k, Some(started.pid)))
}

/// Records the mount: in the store (the plan's lease names the mount and the daemon; the
/// daemon or the unmount releases it) and under /run/chunkfs/lazy for `chunkfs status`.
fn record(
    reg: Box<RegistryPrepared>,
    p: &Prepared,
    target: &Path,
    reader: &str,
    info: &MountInfo,
    daemon_pid: Option<i32>,
    log: &Log,
) {
    let RegistryPrepared {
        pinned,
        offline,
        store,
        mut plan,
        summary,
        spec,
        ..
    } = *reg;
    let mount_id = mountinfo::mounted_at(target)
        .ok()
        .flatten()
        .map_or(0, |m| m.id);
    let point = target.display().to_string();
    let pid = daemon_pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
    if let Err(e) = plan.lease_mut().set_mounted(&point, mount_id, pid) {
        log.info(format_args!("cannot record the mount in the store: {e}"));
    }
    let id = plan.into_lease().keep();
    let record = MountRecord {
        id,
        source: p.display.clone(),
        pinned,
        metadata: p.metadata_digest.to_oci(),
        offline,
        store: store.root().to_owned(),
        registry: spec.registry,
        mount_point: target.to_owned(),
        mount_id,
        reader: reader.to_owned(),
        reason: info.reason.clone(),
        daemon_pid,
        packs: spec.packs,
        used: spec.used,
        background: spec.background,
        plan: summary,
        mounted_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        timings: info
            .timings
            .iter()
            .map(|(w, d)| ((*w).to_owned(), ms(*d)))
            .collect(),
    };
    if let Err(e) = record.write() {
        log.info(format_args!("cannot write the mount's status record: {e}"));
    }
}
