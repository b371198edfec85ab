//! The grain types a node can host, with their per-type options.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::context::GrainContext;
use super::error::{CallError, GrainError};
use super::live::LiveGrain;
use super::methods::{MethodId, Methods};
use super::traits::Grain;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Options of one grain type.
#[derive(Clone, Debug, Default)]
pub struct GrainTypeOptions {
    /// Time an activation of this type may stay idle before it is deactivated; `None` takes
    /// the node's `idle_after_secs`. Must be positive.
    pub idle_after: Option<Duration>,
    /// How new activations of this type choose their node. Default: random.
    pub placement: crate::placement::PlacementStrategy,
    /// Makes the type a stateless worker with up to this many activations per node. Calls are
    /// served on the node that receives them, by an idle activation or a new one while fewer
    /// than the maximum exist, else by the one with the fewest queued calls. Workers have no
    /// directory entry and keep no persisted state. Default: `None` (one activation
    /// cluster-wide).
    pub stateless_worker: Option<std::num::NonZeroU32>,
    /// Keeps activations where they are: migration, rebalancing and draining deactivate them
    /// instead, and they reactivate elsewhere from the store. Default: false.
    pub immovable: bool,
}

/// The grain types a node hosts, by type name.
#[derive(Clone, Default)]
pub struct GrainRegistry {
    types: BTreeMap<&'static str, Arc<dyn GrainFactory>>,
}

/// An invalid grain type registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The idle age of a type is zero.
    #[error("grain type {grain_type:?}: idle_after must be positive")]
    ZeroIdleAge {
        /// The grain type.
        grain_type: &'static str,
    },
    /// The type has no methods, so no call could ever reach it.
    #[error("grain type {grain_type:?} registers no methods; add them in Grain::register")]
    NoMethods {
        /// The grain type.
        grain_type: &'static str,
    },
}

impl GrainRegistry {
    /// Creates an empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `G` with default options; registering a type again replaces it.
    pub fn register<G: Grain>(&mut self) -> &mut Self {
        self.register_with::<G>(GrainTypeOptions::default())
    }

    /// Registers `G` with `options`.
    pub fn register_with<G: Grain>(&mut self, options: GrainTypeOptions) -> &mut Self {
        let mut methods = Methods::new();
        G::register(&mut methods);
        let entry = TypeEntry::<G> {
            methods: Arc::new(methods),
            options,
        };
        self.types.insert(G::TYPE_NAME, Arc::new(entry));
        self
    }

    /// Checks every registered type.
    pub fn validate(&self) -> Result<(), RegistryError> {
        for (&grain_type, factory) in &self.types {
            if factory.options().idle_after == Some(Duration::ZERO) {
                return Err(RegistryError::ZeroIdleAge { grain_type });
            }
            if factory.method_names().is_empty() {
                return Err(RegistryError::NoMethods { grain_type });
            }
        }
        Ok(())
    }

    /// Returns the registered type names, sorted.
    pub fn type_names(&self) -> Vec<&'static str> {
        self.types.keys().copied().collect()
    }

    pub(crate) fn get(&self, grain_type: &str) -> Option<&Arc<dyn GrainFactory>> {
        self.types.get(grain_type)
    }

    /// Returns the factory of `grain_type`, or [`CallError::UnknownGrainType`] listing the
    /// registered types.
    pub(crate) fn require(&self, grain_type: &str) -> Result<&Arc<dyn GrainFactory>, CallError> {
        self.get(grain_type)
            .ok_or_else(|| CallError::UnknownGrainType {
                grain_type: grain_type.to_owned(),
                known: self.type_names().join(", "),
            })
    }
}

/// Creates activations of one grain type and answers questions about it.
pub(crate) trait GrainFactory: Send + Sync + 'static {
    fn options(&self) -> &GrainTypeOptions;
    fn method_names(&self) -> Vec<&'static str>;
    /// Resolves `method` by name, if the type has it.
    fn resolve_method(&self, method: &str) -> Option<MethodId>;
    fn activate<'a>(
        &'a self,
        ctx: &'a mut GrainContext,
    ) -> BoxFuture<'a, Result<Box<dyn LiveGrain>, GrainError>>;
}

struct TypeEntry<G> {
    methods: Arc<Methods<G>>,
    options: GrainTypeOptions,
}

impl<G: Grain> GrainFactory for TypeEntry<G> {
    fn options(&self) -> &GrainTypeOptions {
        &self.options
    }

    fn method_names(&self) -> Vec<&'static str> {
        self.methods.names()
    }

    fn resolve_method(&self, method: &str) -> Option<MethodId> {
        self.methods.resolve(method)
    }

    fn activate<'a>(
        &'a self,
        ctx: &'a mut GrainContext,
    ) -> BoxFuture<'a, Result<Box<dyn LiveGrain>, GrainError>> {
        Box::pin(async move {
            let grain = G::activate(ctx).await?;
            Ok(self.methods.into_live(grain))
        })
    }
}
