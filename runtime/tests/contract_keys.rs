//! `docs/contracts.md` names every key `config/box.toml` accepts: the keys
//! are read from the configuration types themselves (the field names serde
//! gives their `Deserialize`), so a key added to a type and not to the
//! contract fails here.

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use serde::de::{self, Deserialize, Deserializer, Visitor};

const CONTRACT: &str = include_str!("../../docs/contracts.md");

/// Why [`FieldNames`] stops: it only wants the names.
#[derive(Debug)]
struct Names(Vec<&'static str>);

impl std::fmt::Display for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for Names {}

impl de::Error for Names {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Names(Vec::new())
    }
}

/// A deserializer that answers a struct's `deserialize_struct` call with
/// the struct's field names, as an error.
struct FieldNames;

impl<'de> Deserializer<'de> for FieldNames {
    type Error = Names;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Names> {
        Err(Names(Vec::new()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Names> {
        Err(Names(fields.to_vec()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

fn keys_of<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    match T::deserialize(FieldNames) {
        Err(Names(names)) if !names.is_empty() => names,
        _ => panic!("{} is not a struct", std::any::type_name::<T>()),
    }
}

/// The keys the contract names in its tables: the first cell of a row,
/// in backquotes.
fn keys_in_contract() -> Vec<&'static str> {
    CONTRACT
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(key, _)| key))
        .collect()
}

#[test]
fn every_key_box_toml_accepts_is_in_the_contract() {
    let documented = keys_in_contract();
    let mut all = Vec::new();
    for (table, keys) in [
        ("[log]", keys_of::<banalytics_runtime::config::LogConfig>()),
        (
            "every component",
            banalytics_sdk::config::HOST_KEYS.to_vec(),
        ),
        (
            "portal-integration",
            keys_of::<banalytics_portal_integration::PortalConfig>(),
        ),
        (
            "software-upgrade-center",
            keys_of::<banalytics_upgrade_center::UpgradeConfig>(),
        ),
        ("probe", keys_of::<banalytics_probe::ProbeConfig>()),
    ] {
        for key in keys {
            assert!(
                documented.contains(&key),
                "docs/contracts.md does not name the {table} key {key:?}"
            );
            all.push(key);
        }
    }
    assert!(all.len() > 30, "the types were read: {all:?}");
}

#[test]
fn readme_links_the_contract() {
    let readme = include_str!("../../README.md");
    assert!(readme.contains("docs/contracts.md"));
    assert!(
        !readme.contains("../shared/"),
        "README points into a folder a clone does not have"
    );
}
