//! Shared fixtures for the integration tests: tree builders, tree comparison, mount guards that
//! always unmount, and locating the built binaries.
