//! Scheduler plugins: [`Plugin`] and [`scheduler_plugin!`](crate::scheduler_plugin).

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "scheduler",
        path: "../shoal-plugin-host/wit",
        pub_export_macro: true,
        export_macro_name: "export_scheduler",
        default_bindings_module: "shoal_plugin_sdk::scheduler::bindings",
    });
}

pub use bindings::shoal::plugin::scheduling::{Node, Pod, Resources, Taint};

/// A scheduler plugin. One instance serves one pod's scheduling cycle; settings are parsed
/// once per cycle.
pub trait Plugin {
    /// The plugin's `spec.settings`.
    type Settings: serde::de::DeserializeOwned + Send + Sync + 'static;

    fn pre_filter(_pod: &Pod, _settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// `Err(reason)` keeps the pod off the node; the reason is counted in the pod's
    /// `0/N nodes are available` message.
    fn filter(_pod: &Pod, _node: &Node, _settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// Higher is better, on any scale: the host rescales to 0..=100 unless
    /// [`Plugin::normalize`] does.
    fn score(_pod: &Pod, _node: &Node, _settings: &Self::Settings) -> i64 {
        0
    }

    fn normalize(_scores: &[i64], _settings: &Self::Settings) -> Option<Vec<i64>> {
        None
    }
}

/// Exports `$plugin` (a [`Plugin`]) as the component's scheduler world.
#[macro_export]
macro_rules! scheduler_plugin {
    ($plugin:ty) => {
        static __SHOAL_SETTINGS: ::std::sync::OnceLock<
            <$plugin as $crate::scheduler::Plugin>::Settings,
        > = ::std::sync::OnceLock::new();

        fn __shoal_settings() -> Result<&'static <$plugin as $crate::scheduler::Plugin>::Settings, ::std::string::String> {
            __SHOAL_SETTINGS
                .get()
                .ok_or_else(|| "init was not called".to_string())
        }

        struct __ShoalScheduler;
        impl $crate::scheduler::bindings::Guest for __ShoalScheduler {
            fn init(settings: ::std::string::String) -> Result<(), ::std::string::String> {
                let s = $crate::parse_settings(&settings)?;
                let _ = __SHOAL_SETTINGS.set(s);
                Ok(())
            }
            fn pre_filter(pod: &$crate::scheduler::Pod) -> Result<(), ::std::string::String> {
                <$plugin as $crate::scheduler::Plugin>::pre_filter(pod, __shoal_settings()?)
            }
            fn filter(pod: &$crate::scheduler::Pod, node: &$crate::scheduler::Node) -> Result<(), ::std::string::String> {
                <$plugin as $crate::scheduler::Plugin>::filter(pod, node, __shoal_settings()?)
            }
            fn score(pod: &$crate::scheduler::Pod, node: &$crate::scheduler::Node) -> i64 {
                match __shoal_settings() {
                    Ok(s) => <$plugin as $crate::scheduler::Plugin>::score(pod, node, s),
                    Err(_) => 0,
                }
            }
            fn normalize(scores: ::std::vec::Vec<i64>) -> Option<::std::vec::Vec<i64>> {
                <$plugin as $crate::scheduler::Plugin>::normalize(&scores, __shoal_settings().ok()?)
            }
        }
        $crate::scheduler::bindings::export_scheduler!(__ShoalScheduler with_types_in $crate::scheduler::bindings);
    };
}
