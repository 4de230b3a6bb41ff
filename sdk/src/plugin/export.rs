//! What a plugin library exports: its [`PluginKind`]s, and the
//! [`export_plugin!`](crate::export_plugin) macro that generates the
//! `extern "C"` functions of the ABI around them.

use crate::component::ComponentKind;

/// A component kind a plugin exports, with the bus topics its instances
/// exchange with the host.
#[derive(Clone, Debug)]
pub struct PluginKind {
    /// The kind, as a built-in component would register it.
    pub kind: ComponentKind,
    /// Topics whose messages the host forwards to the instance.
    pub subscribes: &'static [&'static str],
    /// Topics whose messages the instance publishes to the host.
    pub publishes: &'static [&'static str],
}

/// Exports `kinds` as a plugin library: generates the `extern "C"` functions
/// the [`plugin`](crate::plugin) docs list, and the identity record in the
/// library file ([`identity`](crate::plugin::identity)). Each kind is its
/// name, a constant `&str` (the record is written at compile time, so that
/// a host reads it without loading the library), and an expression that
/// makes its [`PluginKind`]; the expressions are evaluated once, inside the
/// first exported call that needs them (so a panic there is answered like
/// any other), and a kind whose name is not the declared one panics there.
/// Use once per library:
///
/// ```text
/// banalytics_sdk::export_plugin!(my_component::KIND_NAME => my_component::plugin_kind());
/// ```
///
/// `export_plugin!(abi_version = N; KINDS..)` exports another ABI version;
/// it exists only to test the host's refusal.
///
/// `export_plugin!(forge_topic = "TOPIC"; KINDS..)` makes a library that
/// misbehaves on request, to test the host's bus authority: a message its
/// component publishes on `TOPIC` (which its kind must declare), JSON
/// `{"topic": T, "message": M}`, reaches the host as `M` on topic `T`,
/// whatever the kind declares, as a library built without this SDK could
/// publish.
#[macro_export]
macro_rules! export_plugin {
    (@export $abi:expr, $forge:expr; $($name:expr => $kind:expr),+ $(,)?) => {
        const _: () = {
            use $crate::plugin::{guest, Buf, Bytes, HostCallbacks, HostLog};
            use ::std::ffi::c_void;

            /// The declared kind names, in the identity record.
            const KIND_NAMES: &[&str] = &[$($name),+];
            const RECORD_LEN: usize = $crate::plugin::identity::record_len($abi, KIND_NAMES);

            /// The identity record, in a section of its own so that a host
            /// reads it from the file without loading the library; exported
            /// (and `#[used]`) so that no linker drops it.
            #[used]
            #[unsafe(no_mangle)]
            #[allow(non_upper_case_globals)]
            #[cfg_attr(target_vendor = "apple", unsafe(link_section = "__DATA,__bnlx_plugin"))]
            #[cfg_attr(windows, unsafe(link_section = ".bnlxid"))]
            #[cfg_attr(not(any(target_vendor = "apple", windows)), unsafe(link_section = ".banalytics_plugin"))]
            pub static banalytics_plugin_identity_record: [u8; RECORD_LEN] =
                $crate::plugin::identity::record::<RECORD_LEN>($abi, KIND_NAMES);

            /// The exported kinds, made at the first call that needs them.
            fn kinds() -> &'static [$crate::plugin::PluginKind] {
                static KINDS: ::std::sync::LazyLock<::std::vec::Vec<$crate::plugin::PluginKind>> =
                    ::std::sync::LazyLock::new(|| {
                        let kinds = ::std::vec![$($kind),+];
                        guest::check_declared(KIND_NAMES, &kinds);
                        kinds
                    });
                &KINDS
            }

            /// The ABI version; this signature never changes.
            #[unsafe(no_mangle)]
            pub extern "C" fn banalytics_plugin_abi_version() -> u32 {
                $abi
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_identity(out: *mut Buf) -> i32 {
                unsafe { guest::identity(kinds, out) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_init(log: *const HostLog) -> i32 {
                unsafe { guest::init(log) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_create(
                kind: Bytes,
                init: Bytes,
                host: *const HostCallbacks,
                out: *mut *mut c_void,
                err: *mut Buf,
            ) -> i32 {
                unsafe { guest::create(kinds, $forge, kind, init, host, out, err) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_start(
                instance: *mut c_void,
                args: Bytes,
                err: *mut Buf,
            ) -> i32 {
                unsafe { guest::start(instance, args, err) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_stop(instance: *mut c_void) -> i32 {
                unsafe { guest::stop(instance) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_deliver(
                instance: *mut c_void,
                topic: Bytes,
                message: Bytes,
            ) -> i32 {
                unsafe { guest::deliver(instance, topic, message) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_restart_failed(instance: *mut c_void) -> i32 {
                unsafe { guest::restart_failed(instance) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_destroy(instance: *mut c_void) -> i32 {
                unsafe { guest::destroy(instance) }
            }

            /// # Safety
            /// See `banalytics_sdk::plugin`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn banalytics_plugin_free_buf(buf: Buf) {
                unsafe { guest::free_buf(buf) }
            }
        };
    };
    ($($name:expr => $kind:expr),+ $(,)?) => {
        $crate::export_plugin!(@export $crate::plugin::ABI_VERSION, ::std::option::Option::None; $($name => $kind),+);
    };
    (abi_version = $abi:expr; $($name:expr => $kind:expr),+ $(,)?) => {
        $crate::export_plugin!(@export $abi, ::std::option::Option::None; $($name => $kind),+);
    };
    (forge_topic = $forge:expr; $($name:expr => $kind:expr),+ $(,)?) => {
        $crate::export_plugin!(@export $crate::plugin::ABI_VERSION, ::std::option::Option::Some($forge); $($name => $kind),+);
    };
}
