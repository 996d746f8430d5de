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

pub use bindings::shoal::plugin::scheduling::{Nodes, Pod, Resources, Taint};

/// The batch of nodes a call was lent, with the label values read so far: the first
/// `label(key)` on any node fetches that label for the whole batch in one host call.
pub struct Batch<'a> {
    nodes: &'a Nodes,
    /// `(key, distinct values, value index per node)`.
    labels: std::cell::RefCell<Vec<(String, Vec<String>, Vec<i32>)>>,
}

/// One node of the batch a call was lent; getters ask the host (labels once per batch).
#[derive(Clone, Copy)]
pub struct Node<'a> {
    batch: &'a Batch<'a>,
    index: u32,
}

impl<'a> Node<'a> {
    pub fn name(&self) -> String {
        self.batch.nodes.name(self.index)
    }
    pub fn label(&self, key: &str) -> Option<String> {
        let i = self.index as usize;
        let pick = |values: &[String], index: &[i32]| {
            let k = *index.get(i)?;
            values.get(usize::try_from(k).ok()?).cloned()
        };
        let mut cache = self.batch.labels.borrow_mut();
        if let Some((_, values, index)) = cache.iter().find(|(k, _, _)| k == key) {
            return pick(values, index);
        }
        let (values, index) = self.batch.nodes.label_values(key);
        let v = pick(&values, &index);
        cache.push((key.to_owned(), values, index));
        v
    }
    pub fn labels(&self) -> Vec<(String, String)> {
        self.batch.nodes.labels(self.index)
    }
    pub fn annotation(&self, key: &str) -> Option<String> {
        self.batch.nodes.annotation(self.index, key)
    }
    pub fn taints(&self) -> Vec<Taint> {
        self.batch.nodes.taints(self.index)
    }
    pub fn allocatable(&self) -> Resources {
        self.batch.nodes.allocatable(self.index)
    }
    /// What the pods bound to the node request.
    pub fn requested(&self) -> Resources {
        self.batch.nodes.requested(self.index)
    }
}

#[doc(hidden)]
pub fn each<T>(nodes: &Nodes, f: impl Fn(&Node<'_>) -> T) -> Vec<T> {
    let batch = Batch {
        nodes,
        labels: Default::default(),
    };
    (0..nodes.len())
        .map(|index| {
            f(&Node {
                batch: &batch,
                index,
            })
        })
        .collect()
}

/// A scheduler plugin. One instance serves one pod's scheduling cycle; settings are parsed
/// once per cycle. `filter` and `score` are written per node; the host sends nodes in
/// batches and the SDK loops over them.
pub trait Plugin {
    /// The plugin's `spec.settings`.
    type Settings: serde::de::DeserializeOwned + Send + Sync + 'static;

    fn pre_filter(_pod: &Pod, _settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// `Err(reason)` keeps the pod off the node; the reason is counted in the pod's
    /// `0/N nodes are available` message.
    fn filter(_pod: &Pod, _node: &Node<'_>, _settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// Higher is better, on any scale: the host rescales to 0..=100 unless
    /// [`Plugin::normalize`] does.
    fn score(_pod: &Pod, _node: &Node<'_>, _settings: &Self::Settings) -> i64 {
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
            fn filter(
                pod: &$crate::scheduler::Pod,
                nodes: &$crate::scheduler::Nodes,
            ) -> ::std::vec::Vec<Option<::std::string::String>> {
                match __shoal_settings() {
                    Ok(s) => $crate::scheduler::each(nodes, |n| {
                        <$plugin as $crate::scheduler::Plugin>::filter(pod, n, s).err()
                    }),
                    Err(e) => $crate::scheduler::each(nodes, |_| Some(e.clone())),
                }
            }
            fn score(
                pod: &$crate::scheduler::Pod,
                nodes: &$crate::scheduler::Nodes,
            ) -> ::std::vec::Vec<i64> {
                match __shoal_settings() {
                    Ok(s) => $crate::scheduler::each(nodes, |n| {
                        <$plugin as $crate::scheduler::Plugin>::score(pod, n, s)
                    }),
                    Err(_) => $crate::scheduler::each(nodes, |_| 0),
                }
            }
            fn normalize(scores: ::std::vec::Vec<i64>) -> Option<::std::vec::Vec<i64>> {
                <$plugin as $crate::scheduler::Plugin>::normalize(&scores, __shoal_settings().ok()?)
            }
        }
        $crate::scheduler::bindings::export_scheduler!(__ShoalScheduler with_types_in $crate::scheduler::bindings);
    };
}
