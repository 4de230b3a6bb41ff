//! Module identity: coordinates, module objects from the portal, and the
//! file and repository names derived from them.
//!
//! A module is named by a [`Coords`] everywhere in the box; its text, the
//! *module key*, is the three parts joined by `:` (`com.example:cam:1.2`),
//! written by its `Display` and read by its `FromStr`, and used only at
//! the edges: `modules-info.properties`, the JSON records in `state/`, the
//! hash record and `status` ([`keys`], [`key`], [`keyed`]).
//!
//! Coordinates arrive from the network and become file names and URL paths,
//! so they are names, never paths: every constructor validates them
//! (contracts section 2) and a [`Coords`] value cannot hold anything else.
//! The upload time is an ISO-8601 local date-time read as UTC: its shape is
//! checked here, its calendar is `jiff`'s.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::{civil::DateTime, SignedDuration};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Sha256;

/// Group id of the core module, which has a fixed file name.
pub const CORE_GROUP_ID: &str = "com.banalytics.box";
/// Artifact id of the core module, which has a fixed file name.
pub const CORE_ARTIFACT_ID: &str = "core";
/// File name of the core module in the module folder, whatever its version.
pub const CORE_FILE_NAME: &str = "banalytics-box.jar";
/// File name of a native core module (the host executable) in the module
/// folder, whatever its version: with the platform's executable suffix
/// (`banalytics-box.exe` on Windows, which starts nothing without it).
pub const CORE_EXECUTABLE_NAME: &str = if cfg!(windows) {
    "banalytics-box.exe"
} else {
    "banalytics-box"
};
/// Packagings of native artifacts: built per platform and fetched with the
/// box's target triple as the Maven classifier (contracts section 4).
pub const NATIVE_PACKAGINGS: &[&str] = &["so", "dylib", "dll", "bin", "exe"];
/// Packaging of a module object that declares none.
pub const DEFAULT_PACKAGING: &str = "jar";
/// Repository path suffix of the optional dependencies package.
pub const BIN_SUFFIX: &str = "-bin.zip";
/// Repository path suffix of the optional model package.
pub const MODEL_SUFFIX: &str = "-model.zip";

/// Why a module identity or module object was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoordsError {
    /// A platform (target triple) of a native module is not a plain name.
    #[error("platform {0:?} is not a target triple")]
    InvalidPlatform(String),
    /// A coordinate or packaging is not a plain name.
    #[error("{field} {value:?} is not a valid name: {reason}")]
    InvalidName {
        /// The field, as the portal spells it (`groupId`, `artifactId`, ...).
        field: &'static str,
        /// The refused value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A module key that does not have three parts.
    #[error("module key {value:?} is not groupId:artifactId:version")]
    InvalidKey {
        /// The refused key.
        value: String,
    },
    /// A module type other than `core` or `component`.
    #[error("module type {value:?} is neither core nor component")]
    InvalidModuleType {
        /// The refused type.
        value: String,
    },
    /// An upload time that is not an ISO-8601 local date-time.
    #[error("uploadTime {value:?} is not an ISO-8601 local date-time: {reason}")]
    InvalidUploadTime {
        /// The refused text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A SHA-256 digest that is not 64 hex digits.
    #[error("{field} {value:?} is not a SHA-256 digest of 64 hex digits")]
    InvalidSha256 {
        /// The field (`sha256`, `dependencies.sha256`, `model.sha256`).
        field: &'static str,
        /// The refused value.
        value: String,
    },
}

/// The kind of a module: the host itself or a component plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleType {
    /// The host program (`com.banalytics.box:core`).
    Core,
    /// A component plugin loaded by the host.
    Component,
}

impl ModuleType {
    /// The wire and file spelling: `core` or `component`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleType::Core => "core",
            ModuleType::Component => "component",
        }
    }
}

impl fmt::Display for ModuleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModuleType {
    type Err = CoordsError;

    /// Parses `core` or `component`; the exact spelling is lower-case, but
    /// upper-case (a Java enum name) is accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("core") {
            Ok(ModuleType::Core)
        } else if s.eq_ignore_ascii_case("component") {
            Ok(ModuleType::Component)
        } else {
            Err(CoordsError::InvalidModuleType {
                value: s.to_owned(),
            })
        }
    }
}

/// Validated module coordinates: `groupId`, `artifactId`, `version`.
///
/// Fields are private so that every value has passed [`Coords::new`]:
/// each part is a plain name that is safe in a file name and a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawCoords")]
pub struct Coords {
    group_id: String,
    artifact_id: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCoords {
    group_id: String,
    artifact_id: String,
    version: String,
}

impl TryFrom<RawCoords> for Coords {
    type Error = CoordsError;

    fn try_from(raw: RawCoords) -> Result<Self, Self::Error> {
        Coords::new(raw.group_id, raw.artifact_id, raw.version)
    }
}

impl Coords {
    /// Validates and builds coordinates; the error names the first bad
    /// field and its value.
    pub fn new(
        group_id: impl Into<String>,
        artifact_id: impl Into<String>,
        version: impl Into<String>,
    ) -> Result<Self, CoordsError> {
        let (group_id, artifact_id, version) =
            (group_id.into(), artifact_id.into(), version.into());
        validate_group_id(&group_id)?;
        validate_artifact_name("artifactId", &artifact_id)?;
        validate_artifact_name("version", &version)?;
        Ok(Coords {
            group_id,
            artifact_id,
            version,
        })
    }

    /// The group id, e.g. `com.banalytics.box`.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The artifact id, e.g. `core`.
    pub fn artifact_id(&self) -> &str {
        &self.artifact_id
    }

    /// The version, e.g. `1.0.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether these are the core module's coordinates (any version).
    pub fn is_core(&self) -> bool {
        self.group_id == CORE_GROUP_ID && self.artifact_id == CORE_ARTIFACT_ID
    }

    /// The same module without the version, `groupId:artifactId` (the
    /// module key without its last part): what stays the same across an
    /// upgrade of the module.
    pub fn module_name(&self) -> ModuleName {
        ModuleName {
            group_id: self.group_id.clone(),
            artifact_id: self.artifact_id.clone(),
        }
    }
}

/// A module whatever its version ([`Coords::module_name`]): what a set
/// names at most once, and what a patch starts from across versions.
/// Written `groupId:artifactId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleName {
    group_id: String,
    artifact_id: String,
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.group_id, self.artifact_id)
    }
}

impl fmt::Display for Coords {
    /// The module key: the three parts joined by `:`, as
    /// `modules-info.properties`, `status` and the records in `state/`
    /// write a module.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.group_id, self.artifact_id, self.version)
    }
}

impl FromStr for Coords {
    type Err = CoordsError;

    /// Parses a module key (three parts joined by `:`, as [`Display`](fmt::Display)
    /// writes it) and validates each part.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(g), Some(a), Some(v), None) => Coords::new(g, a, v),
            _ => Err(CoordsError::InvalidKey {
                value: s.to_owned(),
            }),
        }
    }
}

/// Serde for a list of coordinates as their module keys
/// (`#[serde(with = "coords::keys")]`, the text of [`Coords`]'
/// `Display`): how `status` and the records in `state/` name modules.
pub mod keys {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use super::Coords;

    /// Writes each as its module key.
    pub fn serialize<S: Serializer>(coords: &[Coords], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(coords.iter().map(ToString::to_string))
    }

    /// Reads and validates each module key.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Coords>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|key| key.parse().map_err(D::Error::custom))
            .collect()
    }
}

/// Serde for one set of coordinates as its module key
/// (`#[serde(with = "coords::key")]`).
pub mod key {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use super::Coords;

    /// Writes it as its module key.
    pub fn serialize<S: Serializer>(coords: &Coords, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(coords)
    }

    /// Reads and validates a module key.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Coords, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// Serde for an optional list of module keys
/// (`#[serde(with = "coords::optional_keys")]`).
pub mod optional_keys {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Coords;

    #[derive(Serialize, Deserialize)]
    struct Keys(#[serde(with = "super::keys")] Vec<Coords>);

    /// Writes the list as [`super::keys`] does, or none.
    pub fn serialize<S: Serializer>(coords: &Option<Vec<Coords>>, s: S) -> Result<S::Ok, S::Error> {
        coords.as_ref().map(|c| Keys(c.clone())).serialize(s)
    }

    /// Reads the list as [`super::keys`] does, or none.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Coords>>, D::Error> {
        Ok(Option::<Keys>::deserialize(d)?.map(|k| k.0))
    }
}

/// Serde for a map by module (`#[serde(with = "coords::keyed")]`): a JSON
/// object whose keys are module keys.
pub mod keyed {
    use std::collections::BTreeMap;

    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    use super::Coords;

    /// Writes the map with each key as its module key.
    pub fn serialize<S: Serializer, V: Serialize>(
        map: &BTreeMap<Coords, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k.to_string(), v)))
    }

    /// Reads the map, validating each key.
    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<BTreeMap<Coords, V>, D::Error> {
        BTreeMap::<String, V>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((k.parse().map_err(D::Error::custom)?, v)))
            .collect()
    }
}

/// Checks a `groupId`: `[A-Za-z0-9_.-]+` with no empty, `.` or `..`
/// segment between dots.
pub fn validate_group_id(value: &str) -> Result<(), CoordsError> {
    let refuse = |reason| CoordsError::InvalidName {
        field: "groupId",
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(refuse("it is empty"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(refuse("only A-Z, a-z, 0-9, '_', '.' and '-' are allowed"));
    }
    // Segments are split on '.', so they cannot themselves be "." or "..";
    // an empty segment is what a leading, trailing or doubled dot gives.
    if value.split('.').any(str::is_empty) {
        return Err(refuse("it has an empty segment between dots"));
    }
    Ok(())
}

/// Checks an `artifactId` or `version` (named by `field`):
/// `[A-Za-z0-9_.+-]+` and not `.` or `..`.
pub fn validate_artifact_name(field: &'static str, value: &str) -> Result<(), CoordsError> {
    let refuse = |reason| CoordsError::InvalidName {
        field,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(refuse("it is empty"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'))
    {
        return Err(refuse(
            "only A-Z, a-z, 0-9, '_', '.', '+' and '-' are allowed",
        ));
    }
    if value == "." || value == ".." {
        return Err(refuse("it is a relative directory name"));
    }
    Ok(())
}

/// Checks a packaging (file extension): `[A-Za-z0-9]+`.
pub fn validate_packaging(value: &str) -> Result<(), CoordsError> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(CoordsError::InvalidName {
            field: "packaging",
            value: value.to_owned(),
            reason: "only A-Z, a-z and 0-9 are allowed, at least one",
        })
    }
}

/// Integrity data of an optional package (`dependencies` or `model`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInfo {
    /// SHA-256 of the package.
    pub sha256: Sha256,
    /// Size in bytes, when declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// One module of the portal's target set (contracts sections 2 and 3).
///
/// Deserializing validates every field (coordinates, packaging, digests,
/// upload time); a value built by hand should pass [`Module::validate`]
/// before its names are used on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ModuleWire", into = "ModuleWire")]
pub struct Module {
    /// Validated coordinates.
    pub coords: Coords,
    /// Core or component.
    pub module_type: ModuleType,
    /// Upload time as seconds since the Unix epoch, UTC.
    pub upload_time: i64,
    /// File extension of the main artifact; `None` means `jar`.
    pub packaging: Option<String>,
    /// SHA-256 of the main artifact.
    pub sha256: Option<Sha256>,
    /// Size of the main artifact in bytes.
    pub size: Option<u64>,
    /// The optional dependencies package (`-bin.zip`), when declared.
    pub dependencies: Option<PackageInfo>,
    /// The optional model package (`-model.zip`), when declared.
    pub model: Option<PackageInfo>,
    /// For a native module: the digests of each platform's build, by
    /// target triple. `None` when the portal declares none (the classified
    /// artifact's `.sha256` file is used).
    pub platforms: Option<BTreeMap<String, PackageInfo>>,
    /// Extension, for the core module: the launcher handshake versions its
    /// executable speaks (`launcherHandshakes`). `None`: not declared, read
    /// as the first version, which every launcher speaks.
    pub launcher_handshakes: Option<Vec<u32>>,
}

/// The portal's JSON spelling of a module object; unknown fields ignored.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModuleWire {
    group_id: String,
    artifact_id: String,
    version: String,
    #[serde(rename = "type")]
    module_type: ModuleType,
    upload_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    packaging: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<WireDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dependencies: Option<PackageWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<PackageWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platforms: Option<BTreeMap<String, PackageWire>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    launcher_handshakes: Option<Vec<u32>>,
}

/// A digest field as the portal sent it: parsed while the JSON is read,
/// and refused when the module object is validated, where the refusal
/// names the field ([`CoordsError::InvalidSha256`]) and keeps the text.
enum WireDigest {
    Valid(Sha256),
    Invalid(String),
}

impl WireDigest {
    fn check(self, field: &'static str) -> Result<Sha256, CoordsError> {
        match self {
            WireDigest::Valid(digest) => Ok(digest),
            WireDigest::Invalid(value) => Err(CoordsError::InvalidSha256 { field, value }),
        }
    }
}

impl<'de> Deserialize<'de> for WireDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match Sha256::parse(&text) {
            Ok(digest) => WireDigest::Valid(digest),
            Err(_) => WireDigest::Invalid(text),
        })
    }
}

impl Serialize for WireDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WireDigest::Valid(digest) => digest.serialize(s),
            WireDigest::Invalid(text) => text.serialize(s),
        }
    }
}

/// The portal's JSON spelling of a package.
#[derive(Serialize, Deserialize)]
struct PackageWire {
    sha256: WireDigest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

impl PackageWire {
    fn parse(self, field: &'static str) -> Result<PackageInfo, CoordsError> {
        Ok(PackageInfo {
            sha256: self.sha256.check(field)?,
            size: self.size,
        })
    }
}

impl From<PackageInfo> for PackageWire {
    fn from(p: PackageInfo) -> Self {
        PackageWire {
            sha256: WireDigest::Valid(p.sha256),
            size: p.size,
        }
    }
}

impl TryFrom<ModuleWire> for Module {
    type Error = CoordsError;

    /// Validates every field, in the order of the module object: a refusal
    /// names the first bad one.
    fn try_from(w: ModuleWire) -> Result<Self, Self::Error> {
        let coords = Coords::new(w.group_id, w.artifact_id, w.version)?;
        let upload_time = parse_upload_time(&w.upload_time)?;
        if let Some(packaging) = &w.packaging {
            validate_packaging(packaging)?;
        }
        let sha256 = w.sha256.map(|s| s.check("sha256")).transpose()?;
        let dependencies = w
            .dependencies
            .map(|p| p.parse("dependencies.sha256"))
            .transpose()?;
        let model = w.model.map(|p| p.parse("model.sha256")).transpose()?;
        let platforms = w
            .platforms
            .map(|platforms| {
                platforms
                    .into_iter()
                    .map(|(triple, p)| {
                        validate_platform(&triple)?;
                        Ok((triple, p.parse("platforms.sha256")?))
                    })
                    .collect::<Result<BTreeMap<_, _>, CoordsError>>()
            })
            .transpose()?;
        Ok(Module {
            coords,
            module_type: w.module_type,
            upload_time,
            packaging: w.packaging,
            sha256,
            size: w.size,
            dependencies,
            model,
            platforms,
            launcher_handshakes: w.launcher_handshakes,
        })
    }
}

impl From<Module> for ModuleWire {
    fn from(m: Module) -> Self {
        ModuleWire {
            group_id: m.coords.group_id,
            artifact_id: m.coords.artifact_id,
            version: m.coords.version,
            module_type: m.module_type,
            upload_time: format_upload_time(m.upload_time),
            packaging: m.packaging,
            sha256: m.sha256.map(WireDigest::Valid),
            size: m.size,
            dependencies: m.dependencies.map(PackageWire::from),
            model: m.model.map(PackageWire::from),
            platforms: m
                .platforms
                .map(|p| p.into_iter().map(|(t, p)| (t, p.into())).collect()),
            launcher_handshakes: m.launcher_handshakes,
        }
    }
}

impl Module {
    /// Checks the fields that their types do not guard: the packaging and
    /// the platforms' target triples.
    pub fn validate(&self) -> Result<(), CoordsError> {
        if let Some(packaging) = &self.packaging {
            validate_packaging(packaging)?;
        }
        for triple in self.platforms.iter().flat_map(|p| p.keys()) {
            validate_platform(triple)?;
        }
        Ok(())
    }

    /// Whether the main artifact is native: built per platform, fetched
    /// with the platform's target triple as classifier.
    pub fn is_native(&self) -> bool {
        NATIVE_PACKAGINGS.contains(&self.packaging())
    }

    /// The repository path suffix of the main artifact for `platform`:
    /// `-{triple}.{packaging}` for a native artifact, `.{packaging}` for
    /// every other.
    pub fn main_suffix(&self, platform: &str) -> String {
        if self.is_native() {
            format!("-{platform}.{}", self.packaging())
        } else {
            format!(".{}", self.packaging())
        }
    }

    /// The packaging, `jar` when none was declared.
    pub fn packaging(&self) -> &str {
        self.packaging.as_deref().unwrap_or(DEFAULT_PACKAGING)
    }
}

/// The module's file name in the module folder: `banalytics-box` for a
/// native core module (the host executable), `banalytics-box.jar` for a
/// Java-era one, `{groupId}-{artifactId}-{version}.{packaging}` for every
/// other. The platform is not in the name: a box holds one platform's
/// build.
pub fn file_name(module: &Module) -> String {
    if module.coords.is_core() && module.is_native() {
        CORE_EXECUTABLE_NAME.to_owned()
    } else if module.coords.is_core() {
        CORE_FILE_NAME.to_owned()
    } else {
        let c = &module.coords;
        format!(
            "{}-{}-{}.{}",
            c.group_id,
            c.artifact_id,
            c.version,
            module.packaging()
        )
    }
}

/// The Maven repository path of an artifact of `coords`, relative to the
/// repository root: `{groupId with . as /}/{artifactId}/{version}/{artifactId}-{version}{suffix}`.
///
/// `suffix` is `.{packaging}` for the main artifact (see
/// [`main_artifact_path`]), [`BIN_SUFFIX`] or [`MODEL_SUFFIX`].
pub fn maven_path(coords: &Coords, suffix: &str) -> String {
    format!(
        "{}/{}/{}/{}-{}{}",
        coords.group_id.replace('.', "/"),
        coords.artifact_id,
        coords.version,
        coords.artifact_id,
        coords.version,
        suffix
    )
}

/// The Maven repository path of the module's main artifact for `platform`
/// (a target triple; used only for a native artifact).
pub fn main_artifact_path(module: &Module, platform: &str) -> String {
    maven_path(&module.coords, &module.main_suffix(platform))
}

/// Checks a target triple used as a classifier: what a Maven classifier
/// and a file name allow (`[A-Za-z0-9_.-]`, not empty, no leading `.`).
pub fn validate_platform(value: &str) -> Result<(), CoordsError> {
    let ok = !value.is_empty()
        && !value.starts_with('.')
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CoordsError::InvalidPlatform(value.to_owned()))
    }
}

/// The Unix epoch as a UTC date-time: upload times are counted from it.
const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

/// Parses an ISO-8601 local date-time (`2026-03-01T10:15:30`) as UTC and
/// returns seconds since the Unix epoch.
///
/// Accepted like Java's `LocalDateTime.parse`: seconds may be absent
/// (`2026-03-01T10:15`, how Java prints a whole minute), a fraction of 1
/// to 9 digits may follow them and is dropped; a trailing `Z` is accepted.
/// Years are four digits. The shape is checked here, the calendar (month
/// lengths, leap years, times of day) is `jiff`'s.
pub fn parse_upload_time(text: &str) -> Result<i64, CoordsError> {
    let refuse = |reason| CoordsError::InvalidUploadTime {
        value: text.to_owned(),
        reason,
    };
    let local = text.strip_suffix('Z').unwrap_or(text);
    check_shape(local.as_bytes()).map_err(refuse)?;
    // The fraction is dropped: the time counts from its whole second.
    let time = local
        .parse::<DateTime>()
        .and_then(|t| t.with().subsec_nanosecond(0).build())
        .map_err(|_| refuse("no such date or time of day"))?;
    Ok(time.duration_since(EPOCH).as_secs())
}

/// Checks `yyyy-MM-ddTHH:mm[:ss[.fraction]]` ('t' for 'T' too) before
/// `jiff` reads it: `jiff` alone also takes a date without a time, a space
/// for the 'T', an hour alone, offsets, `,` before the fraction, six-digit
/// years and the leap second `:60` (as `:59`), none of which Java's
/// `LocalDateTime` writes, and none of which this parser ever accepted.
fn check_shape(s: &[u8]) -> Result<(), &'static str> {
    // `d` a digit, `T` the date-time separator, anything else itself.
    const DATE_TIME: &[u8] = b"dddd-dd-ddTdd:dd";
    let fits = |(c, p): (&u8, &u8)| match p {
        b'd' => c.is_ascii_digit(),
        b'T' => matches!(c, b'T' | b't'),
        p => c == p,
    };
    if s.len() < DATE_TIME.len() || !s.iter().zip(DATE_TIME).all(fits) {
        return Err("expected yyyy-MM-ddTHH:mm[:ss[.fraction]]");
    }
    match &s[DATE_TIME.len()..] {
        [] => Ok(()),
        [b':', tens, units, fraction @ ..] if tens.is_ascii_digit() && units.is_ascii_digit() => {
            if *tens > b'5' {
                return Err("time of day out of range");
            }
            match fraction {
                [] => Ok(()),
                [b'.', digits @ ..]
                    if (1..=9).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit) =>
                {
                    Ok(())
                }
                _ => Err("expected 1 to 9 digits of fraction after '.'"),
            }
        }
        _ => Err("expected ':ss' after the minutes"),
    }
}

/// Formats seconds since the Unix epoch as an ISO-8601 local date-time in
/// UTC, always with seconds (`2026-03-01T10:15:30`): what
/// [`parse_upload_time`] reads back. Years outside 0000..=9999 get a sign,
/// as in Java, and are not read back; past `jiff`'s range (years -9999 to
/// 9999, far beyond any upload) the time is clamped to its ends.
pub fn format_upload_time(epoch_seconds: i64) -> String {
    let time = EPOCH
        .checked_add(SignedDuration::from_secs(epoch_seconds))
        .unwrap_or(if epoch_seconds < 0 {
            DateTime::MIN
        } else {
            DateTime::MAX
        });
    let year = time.year();
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    };
    format!(
        "{year}-{:02}-{:02}T{:02}:{:02}:{:02}",
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn module_json() -> serde_json::Value {
        json!({
            "groupId": "com.banalytics.box",
            "artifactId": "video-module",
            "version": "1.2.3",
            "type": "component",
            "uploadTime": "2026-03-01T10:15:30",
            "status": "installation_planned",
            "description": "ignored"
        })
    }

    #[test]
    fn two_versions_of_a_module_have_one_module_name() {
        let (a1, a2): (Coords, Coords) = ("g.x:a:1".parse().unwrap(), "g.x:a:2".parse().unwrap());
        assert_eq!(a1.module_name(), a2.module_name());
        assert_ne!(
            a1.module_name(),
            "g.x:b:1".parse::<Coords>().unwrap().module_name()
        );
        assert_eq!(a1.module_name().to_string(), "g.x:a");
    }

    #[test]
    fn accepts_plain_coordinates() {
        let c = Coords::new("com.banalytics.box", "core", "1.0.0-SNAPSHOT+build.7").unwrap();
        assert_eq!(
            c.to_string(),
            "com.banalytics.box:core:1.0.0-SNAPSHOT+build.7"
        );
        assert!(c.is_core());
    }

    #[test]
    fn refuses_group_id_with_path_parts_naming_field_and_value() {
        for bad in [
            "../etc", "a..b", ".a", "a.", "", "a/b", "a\\b", "a+b", "a b",
        ] {
            let err = Coords::new(bad, "x", "1").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("groupId {bad:?} is not a valid name: ")),
                "{msg}"
            );
        }
    }

    #[test]
    fn refuses_artifact_and_version_dot_names() {
        for bad in [".", "..", "", "a/b", "a:b", "é"] {
            let err = Coords::new("g", bad, "1").unwrap_err();
            assert!(
                matches!(
                    err,
                    CoordsError::InvalidName {
                        field: "artifactId",
                        ..
                    }
                ),
                "{bad}"
            );
            let err = Coords::new("g", "a", bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    CoordsError::InvalidName {
                        field: "version",
                        ..
                    }
                ),
                "{bad}"
            );
        }
        assert!(
            Coords::new("g", "...", "1..2").is_ok(),
            "only . and .. themselves are refused"
        );
    }

    #[test]
    fn parses_and_refuses_properties_keys() {
        let c: Coords = "g.h:a:1".parse().unwrap();
        assert_eq!(
            (c.group_id(), c.artifact_id(), c.version()),
            ("g.h", "a", "1")
        );
        assert!(matches!(
            "g:a".parse::<Coords>(),
            Err(CoordsError::InvalidKey { .. })
        ));
        assert!(matches!(
            "g:a:1:x".parse::<Coords>(),
            Err(CoordsError::InvalidKey { .. })
        ));
    }

    #[test]
    fn deserializes_portal_module_ignoring_unknown_fields() {
        let m: Module = serde_json::from_value(module_json()).unwrap();
        assert_eq!(
            m.coords,
            Coords::new("com.banalytics.box", "video-module", "1.2.3").unwrap()
        );
        assert_eq!(m.module_type, ModuleType::Component);
        assert_eq!(m.upload_time, 1_772_360_130);
        assert_eq!(m.packaging(), "jar");
        assert_eq!((m.sha256, m.size, &m.dependencies), (None, None, &None));
    }

    #[test]
    fn deserializes_extension_fields_and_lowercases_digests() {
        let mut v = module_json();
        let sha = "AB".repeat(32);
        v["sha256"] = json!(sha);
        v["size"] = json!(42);
        v["packaging"] = json!("so");
        v["dependencies"] = json!({"sha256": "cd".repeat(32), "size": 7});
        v["model"] = json!({"sha256": "EF".repeat(32)});
        let m: Module = serde_json::from_value(v).unwrap();
        assert_eq!(m.sha256.unwrap().to_string(), "ab".repeat(32));
        assert_eq!(m.size, Some(42));
        assert_eq!(m.packaging(), "so");
        assert_eq!(m.dependencies.as_ref().unwrap().size, Some(7));
        assert_eq!(
            m.model.as_ref().unwrap().sha256.to_string(),
            "ef".repeat(32)
        );
        assert_eq!(file_name(&m), "com.banalytics.box-video-module-1.2.3.so");
    }

    #[test]
    fn refuses_module_with_bad_name_in_message() {
        let mut v = module_json();
        v["artifactId"] = json!("../../bin");
        let err = serde_json::from_value::<Module>(v).unwrap_err().to_string();
        assert!(
            err.contains(r#"artifactId "../../bin" is not a valid name"#),
            "{err}"
        );

        let mut v = module_json();
        v["packaging"] = json!("jar/../x");
        let err = serde_json::from_value::<Module>(v).unwrap_err().to_string();
        assert!(err.contains(r#"packaging "jar/../x""#), "{err}");

        let mut v = module_json();
        v["sha256"] = json!("abc");
        let err = serde_json::from_value::<Module>(v).unwrap_err().to_string();
        assert!(err.contains(r#"sha256 "abc" is not a SHA-256"#), "{err}");

        // A package's digest: the refusal names the package's field.
        let mut v = module_json();
        v["model"] = json!({ "sha256": "xyz", "size": 3 });
        let err = serde_json::from_value::<Module>(v).unwrap_err().to_string();
        assert!(
            err.contains(r#"model.sha256 "xyz" is not a SHA-256"#),
            "{err}"
        );
        let mut v = module_json();
        v["platforms"] = json!({ "x86_64-unknown-linux-gnu": { "sha256": "" } });
        let err = serde_json::from_value::<Module>(v).unwrap_err().to_string();
        assert!(
            err.contains(r#"platforms.sha256 "" is not a SHA-256"#),
            "{err}"
        );

        let mut v = module_json();
        v["type"] = json!("plugin");
        assert!(serde_json::from_value::<Module>(v).is_err());
    }

    #[test]
    fn module_serializes_back_to_portal_spelling() {
        let m: Module = serde_json::from_value(module_json()).unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            json!({
                "groupId": "com.banalytics.box",
                "artifactId": "video-module",
                "version": "1.2.3",
                "type": "component",
                "uploadTime": "2026-03-01T10:15:30"
            })
        );
    }

    #[test]
    fn core_module_file_name_is_fixed() {
        let mut v = module_json();
        v["artifactId"] = json!("core");
        v["type"] = json!("core");
        let m: Module = serde_json::from_value(v).unwrap();
        assert_eq!(file_name(&m), "banalytics-box.jar");
    }

    #[test]
    fn maven_paths_follow_repository_layout() {
        let m: Module = serde_json::from_value(module_json()).unwrap();
        assert_eq!(
            main_artifact_path(&m, "x86_64-unknown-linux-gnu"),
            "com/banalytics/box/video-module/1.2.3/video-module-1.2.3.jar"
        );
        assert_eq!(
            maven_path(&m.coords, BIN_SUFFIX),
            "com/banalytics/box/video-module/1.2.3/video-module-1.2.3-bin.zip"
        );
        assert_eq!(
            maven_path(&m.coords, MODEL_SUFFIX),
            "com/banalytics/box/video-module/1.2.3/video-module-1.2.3-model.zip"
        );
    }

    #[test]
    fn parses_upload_time_variants_as_utc() {
        assert_eq!(parse_upload_time("1970-01-01T00:00:00").unwrap(), 0);
        assert_eq!(
            parse_upload_time("2026-03-01T10:15:30").unwrap(),
            1_772_360_130
        );
        assert_eq!(
            parse_upload_time("2026-03-01T10:15").unwrap(),
            1_772_360_100
        );
        assert_eq!(
            parse_upload_time("2026-03-01T10:15:30.123456789").unwrap(),
            1_772_360_130
        );
        assert_eq!(
            parse_upload_time("2026-03-01T10:15:30Z").unwrap(),
            1_772_360_130
        );
        assert_eq!(
            parse_upload_time("2024-02-29T23:59:59").unwrap(),
            1_709_251_199
        );
        assert_eq!(parse_upload_time("1969-12-31T23:59:59").unwrap(), -1);
    }

    #[test]
    fn refuses_malformed_upload_times() {
        for bad in [
            "",
            "2026-03-01",
            "2026-03-01 10:15:30",
            "2026-13-01T10:15:30",
            "2025-02-29T10:15:30",
            "2026-03-01T24:00:00",
            "2026-03-01T10:15:60",
            "2026-03-01T10:15:30.",
            "2026-03-01T10:15:30.1234567890",
            "2026-03-01T10:15:3",
            "+2026-03-01T10:15:30",
            "2026-03-01T10:15:30+01:00",
        ] {
            let err = parse_upload_time(bad).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("uploadTime {bad:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn drops_the_fraction_before_the_epoch_too() {
        assert_eq!(parse_upload_time("1969-12-31T23:59:59.5").unwrap(), -1);
        assert_eq!(parse_upload_time("1970-01-01T00:00:00.999").unwrap(), 0);
    }

    #[test]
    fn refuses_what_jiff_alone_would_accept() {
        for text in [
            "2026-03-01",
            "2026-03-01 10:15:30",
            "2026-03-01T10",
            "20260301T101530",
            "2026-03-01T10:15:30,5",
            "+002026-03-01T10:15:30",
            "2026-03-01T10:15:30-05:00[America/New_York]",
            "2026-03-01T10:15:60",
        ] {
            assert!(text.parse::<DateTime>().is_ok(), "jiff reads {text:?}");
            assert!(
                matches!(
                    parse_upload_time(text),
                    Err(CoordsError::InvalidUploadTime { .. })
                ),
                "{text:?} is not what LocalDateTime writes"
            );
        }
    }

    #[test]
    fn formats_upload_time_with_seconds() {
        assert_eq!(format_upload_time(0), "1970-01-01T00:00:00");
        assert_eq!(format_upload_time(1_772_360_100), "2026-03-01T10:15:00");
        assert_eq!(format_upload_time(-1), "1969-12-31T23:59:59");
    }

    proptest! {
        #[test]
        fn upload_time_round_trips(epoch in -62_167_219_200i64..253_402_300_800i64) {
            prop_assert_eq!(parse_upload_time(&format_upload_time(epoch)).unwrap(), epoch);
        }

        #[test]
        fn upload_time_parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse_upload_time(&s);
        }

        #[test]
        fn coordinate_validation_never_panics_and_accepts_only_names(
            g in "[A-Za-z0-9_.+/\\\\:-]{0,12}|\\PC{0,12}",
            a in "[A-Za-z0-9_.+/\\\\:-]{0,12}|\\PC{0,12}",
            v in "[A-Za-z0-9_.+/\\\\:-]{0,12}|\\PC{0,12}",
        ) {
            if let Ok(c) = Coords::new(g, a, v) {
                for name in [c.group_id(), c.artifact_id(), c.version()] {
                    prop_assert!(!name.contains('/') && !name.contains('\\'));
                    prop_assert!(name != "." && name != "..");
                }
                let path = maven_path(&c, BIN_SUFFIX);
                prop_assert!(path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
                prop_assert!(!c.group_id().contains(".."));
            }
        }
    }

    #[test]
    fn a_native_module_is_classified_by_platform_and_a_java_one_is_not() {
        let mut v = module_json();
        v["packaging"] = json!("so");
        v["platforms"] =
            json!({"x86_64-unknown-linux-gnu": {"sha256": "AB".repeat(32), "size": 7}});
        let m: Module = serde_json::from_value(v).unwrap();
        assert!(m.is_native());
        assert_eq!(
            main_artifact_path(&m, "x86_64-unknown-linux-gnu"),
            "com/banalytics/box/video-module/1.2.3/video-module-1.2.3-x86_64-unknown-linux-gnu.so"
        );
        let builds = m.platforms.as_ref().unwrap();
        assert_eq!(
            builds["x86_64-unknown-linux-gnu"].sha256.to_string(),
            "ab".repeat(32)
        );
        assert_eq!(file_name(&m), "com.banalytics.box-video-module-1.2.3.so");
        let jar: Module = serde_json::from_value(module_json()).unwrap();
        assert!(!jar.is_native());
        assert_eq!(
            main_artifact_path(&jar, "x86_64-unknown-linux-gnu"),
            "com/banalytics/box/video-module/1.2.3/video-module-1.2.3.jar"
        );
    }

    #[test]
    fn a_native_core_is_the_host_executable() {
        let mut v = module_json();
        v["artifactId"] = json!("core");
        v["type"] = json!("core");
        v["packaging"] = json!("bin");
        let m: Module = serde_json::from_value(v).unwrap();
        assert_eq!(file_name(&m), CORE_EXECUTABLE_NAME);
    }

    #[test]
    fn a_platform_that_is_not_a_plain_name_is_refused() {
        for bad in ["", "../x", "a/b", ".hidden", "x y"] {
            let mut v = module_json();
            v["packaging"] = json!("so");
            v["platforms"] = json!({bad: {"sha256": "ab".repeat(32)}});
            let err = serde_json::from_value::<Module>(v).unwrap_err().to_string();
            assert!(err.contains("is not a target triple"), "{bad}: {err}");
        }
    }
}
