//! The host's one `bindgen!` of `wit/`, and the conversions from its generated
//! types to the runtime's domain types. Generated types go no further than this file.

use super::outcome::{JobInfo, Overlap};
pub use super::services::LockGuardEntry;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "quartzite:job/job",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "quartzite:job/host.lock-guard": LockGuardEntry,
    },
});

pub use self::quartzite::job::types as wit;

/// The version of `quartzite:job` this host implements.
pub const WIT_VERSION: WitVersion = WitVersion {
    major: 1,
    minor: 1,
    patch: 0,
};

/// The WIT package name of the contract.
pub const WIT_PACKAGE: &str = "quartzite:job";

/// A semver version of the `quartzite:job` package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct WitVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl WitVersion {
    /// Parses `1.2.3` (pre-release and build suffixes are not used by the contract).
    pub fn parse(text: &str) -> Option<WitVersion> {
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(WitVersion {
            major,
            minor,
            patch,
        })
    }

    /// Whether a component built for `self` runs on a host implementing `host`:
    /// same major version and no newer minor (patches add no API).
    pub fn runs_on(self, host: WitVersion) -> bool {
        self.major == host.major && self.minor <= host.minor
    }
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl From<wit::JobInfo> for JobInfo {
    fn from(info: wit::JobInfo) -> Self {
        JobInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            default_schedule: info.default_schedule,
            overlap: info.overlap.map(|o| match o {
                wit::Overlap::Allow => Overlap::Allow,
                wit::Overlap::Forbid => Overlap::Forbid,
                wit::Overlap::Skip => Overlap::Skip,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_runs_on_the_same_or_a_later_minor_of_its_major() {
        let v = |s| WitVersion::parse(s).unwrap();
        assert!(v("1.0.0").runs_on(v("1.0.0")));
        assert!(v("1.0.0").runs_on(v("1.3.0")));
        assert!(v("1.0.2").runs_on(v("1.1.0")));
        assert!(v("1.0.2").runs_on(v("1.0.0")));
        assert!(!v("1.1.0").runs_on(v("1.0.0")));
        assert!(!v("2.0.0").runs_on(v("1.9.0")));
        assert!(!v("0.9.0").runs_on(v("1.0.0")));
        assert_eq!(WitVersion::parse("1.0"), None);
        assert_eq!(WitVersion::parse("1.0.0.0"), None);
    }
}
