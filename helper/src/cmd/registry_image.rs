//! A chunkfs image of a registry opened through the local store, as `pull`, `pack` and
//! `inspect` of `docker://...` use it: the store and the client from the shared flags,
//! [`remote::open`] (manifest, config and metadata checked and kept in the store), a plan, and
//! what the plan says the store already holds.

use std::collections::HashSet;

use chunkfs_distribution::oci::select::PlatformSpec;
use chunkfs_distribution::registry::{Client, ImageRef};
use chunkfs_distribution::remote::{self, RemoteImage};
use chunkfs_distribution::store::{ChunkSource, Plan, Store};
use chunkfs_format::translate::ExtentLayout;

use super::registry_flags::{RegistryFlags, StoreFlag};
use crate::Error;

/// A registry image opened through the store.
pub struct Opened {
    /// The store.
    pub store: Store,
    /// The client of the image's repository.
    pub client: Client,
    /// The image: checked manifest and metadata.
    pub image: RemoteImage,
}

/// Opens `reference` (the platform's image of a multi-platform one) through the store. When
/// the registry cannot be reached and the store has the image, says so on stderr and goes on.
pub fn open(
    reference: &ImageRef,
    platform: Option<&PlatformSpec>,
    store: &StoreFlag,
    registry: &RegistryFlags,
) -> Result<Opened, Error> {
    let store = store.open()?;
    let client = registry.client(reference)?;
    let image = remote::open(&store, &client, reference, platform)?;
    if let Some(why) = &image.offline {
        eprintln!("chunkfs: warning: {why}");
    }
    Ok(Opened {
        store,
        client,
        image,
    })
}

impl Opened {
    /// Plans the image so that any later mount finds every chunk it reads where this plan put
    /// it: with the cluster layout's extents when every pack of the image ends its frames on
    /// 512-byte boundaries (so that chunks shared with other images come from packs such a
    /// mount can read too), else with 48-bit extents.
    pub fn plan_for_any_mount(&mut self) -> Result<Plan, Error> {
        // No gc between adding the packs here and the plan's record naming them.
        let _setup = self.store.setup().map_err(|e| self.about(e))?;
        let mut aligned = !self.image.packs.is_empty();
        for (digest, len) in &self.image.packs {
            let pack = self
                .store
                .add_pack(digest, *len, &self.client)
                .map_err(|e| self.about(e))?;
            aligned &= pack.align512();
        }
        self.plan(if aligned {
            ExtentLayout::Clusters
        } else {
            ExtentLayout::Bit48
        })
    }

    /// Plans the image for a descriptor with `extents`.
    pub fn plan(&mut self, extents: ExtentLayout) -> Result<Plan, Error> {
        Ok(self.image.plan(&self.store, &self.client, extents)?)
    }

    /// True if a pin of the store keeps this image.
    pub fn pinned(&self) -> Result<bool, Error> {
        let pins = self.store.pins().map_err(|e| self.about(e))?;
        Ok(pins
            .iter()
            .any(|p| p.manifest == self.image.manifest_digest))
    }

    fn about(&self, e: chunkfs_distribution::store::Error) -> Error {
        Error::from(e).about(&self.image.given)
    }
}

/// Frame bytes of a plan by where they are read from (each distinct frame counted once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Present in the image's own packs.
    pub own: u64,
    /// Present in packs of other images.
    pub shared: u64,
    /// Still to fetch.
    pub missing: u64,
}

impl Holdings {
    /// What `plan` reads from where.
    pub fn of(plan: &Plan) -> Self {
        let mut seen = HashSet::new();
        let mut h = Holdings::default();
        for (loc, src) in plan.locations.iter().zip(&plan.sources) {
            if !seen.insert((loc.device, loc.offset)) {
                continue;
            }
            let n = u64::from(loc.stored_len);
            match src {
                ChunkSource::Own => h.own += n,
                ChunkSource::Shared => h.shared += n,
                ChunkSource::Fetch => h.missing += n,
            }
        }
        h
    }

    /// Bytes already in the store.
    pub fn present(&self) -> u64 {
        self.own + self.shared
    }

    /// Every frame byte the image reads.
    pub fn total(&self) -> u64 {
        self.own + self.shared + self.missing
    }
}
