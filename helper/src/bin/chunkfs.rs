//! `chunkfs`: pack, unpack, inspect, verify, mount and collect chunkfs images.
//!
//! One binary, two names: invoked as `mount.chunkfs` (a symlink installed in /sbin) it is the
//! mount(8) helper, `mount.chunkfs SOURCE TARGET [-sfnv] [-o options]`.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("chunkfs: no subcommands yet")
}
