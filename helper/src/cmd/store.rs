//! `chunkfs store config [--max-size SIZE|none]`: the local store's settings (its size bound)
//! and what it holds.

use chunkfs_distribution::store::{Config, Store};
use indicatif::HumanBytes;

use super::registry_flags::StoreFlag;
use crate::Error;
use crate::mount::options::parse_size;

/// Arguments of `chunkfs store`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs store config\n",
    "  chunkfs store config --max-size 20G\n\n",
    "The store's other commands: `chunkfs pull`, `chunkfs rm docker://...`, `chunkfs gc\n",
    "--store`, `chunkfs verify --store` (docs/store.md §11).\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What `chunkfs store` does.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Show the store's settings and what it holds, or change its size bound.
    #[command(after_help = concat!(
        "Examples:\n",
        "  chunkfs store config\n",
        "  chunkfs store config --max-size 20G\n",
        "  chunkfs store config --store=/srv/chunkfs --max-size none\n\n",
        "The size bound (config.json's max-size) counts the disk blocks the store's files take\n",
        "(packs are sparse). When a mount or a pull plans an image over the bound, whole packs\n",
        "no pin or live mount uses are evicted, least recently used first (docs/store.md §7);\n",
        "what pinned and mounted images need is never evicted, so the store can stay above it.\n\n",
        crate::exit_help!()
    ))]
    Config(ConfigArgs),
}

/// Arguments of `chunkfs store config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// The bound on the store's disk use: BYTES, or with K, M, G, T (1024-based); `none`
    /// removes it.
    #[arg(long, value_name = "SIZE|none", value_parser = parse_bound)]
    pub max_size: Option<Bound>,
    /// The local store (`--store`).
    #[command(flatten)]
    pub store: StoreFlag,
}

/// A `--max-size` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// No bound.
    None,
    /// At most this many bytes.
    Bytes(u64),
}

fn parse_bound(s: &str) -> Result<Bound, String> {
    if s == "none" {
        return Ok(Bound::None);
    }
    match parse_size(s) {
        Some(0) | None => Err(format!(
            "{s:?}: expected a positive size (4096, 512M, 20G, ...) or none"
        )),
        Some(n) => Ok(Bound::Bytes(n)),
    }
}

/// Runs `chunkfs store`.
pub fn run(args: &Args) -> Result<(), Error> {
    match &args.command {
        Command::Config(a) => config(a),
    }
}

fn config(args: &ConfigArgs) -> Result<(), Error> {
    let mut store = match args.max_size {
        // Setting a bound may create the store; showing one needs it to exist.
        Some(_) => args.store.open()?,
        None => args.store.open_existing()?,
    };
    let root = store.root().display().to_string();
    let about = |e| Error::from(e).about(format!("store {root}"));
    if let Some(bound) = args.max_size {
        let max_size = match bound {
            Bound::None => None,
            Bound::Bytes(n) => Some(n),
        };
        let mut config: Config = store.config().clone();
        config.max_size = max_size;
        store.write_config(config).map_err(about)?;
    }
    print!("{}", describe(&store).map_err(about)?);
    Ok(())
}

/// The store's settings and holdings, one `label: value` per line.
fn describe(store: &Store) -> Result<String, chunkfs_distribution::store::Error> {
    let s = store.stats()?;
    let bound = match s.max_size {
        Some(n) => format!("{} ({n} bytes)", HumanBytes(n)),
        None => "none".into(),
    };
    Ok(format!(
        "store:       {}\nmax-size:    {bound}\ndisk use:    {} ({} bytes)\npacks:       {} ({} damaged), {} of {} frames present ({} of {})\nblobs:       {} ({})\npins:        {}\nmounts:      {} records\n",
        store.root().display(),
        HumanBytes(s.disk_bytes),
        s.disk_bytes,
        s.packs,
        s.damaged_packs,
        s.frames_present,
        s.frames,
        HumanBytes(s.present_bytes),
        HumanBytes(s.frame_bytes),
        s.blobs,
        HumanBytes(s.blob_bytes),
        s.pins,
        s.mounts
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(parse_bound("none"), Ok(Bound::None));
        assert_eq!(parse_bound("20G"), Ok(Bound::Bytes(20 << 30)));
        assert_eq!(parse_bound("4096"), Ok(Bound::Bytes(4096)));
        for bad in ["0", "", "-1", "12Q", "None"] {
            assert!(parse_bound(bad).is_err(), "{bad}");
        }
    }
}
