//! Opening a gateway: the settings checked, the store chosen (sled under `data_dir`, or a
//! cluster node's PostgreSQL store, spec/CLUSTER.md), the terms rendered and remembered.

use super::*;

/// The settings' addresses (contract, payee, token), after checking what no gateway can
/// run with: a payee key that is not `pay_to`'s, lanes out of range, zero body limits, an
/// invalid metered price.
fn check_settings(
    settings: &Settings,
    payee_key: Option<&PrivateKeySigner>,
) -> Result<(Address, Address, Address), StartError> {
    let contract = parse_address("contract", &settings.chain.contract)?;
    let payee = parse_address("pay_to", &settings.chain.pay_to)?;
    let token = parse_address("asset", &settings.chain.asset)?;
    if let Some(k) = payee_key {
        if k.address() != payee {
            return Err(StartError::PayeeKeyMismatch {
                key: k.address().to_string(),
                pay_to: settings.chain.pay_to.clone(),
            });
        }
    }
    if settings.max_lanes == 0 || settings.max_lanes > tally_core::sequence::MAX_LANES {
        return Err(StartError::Config(format!(
            "max_lanes {} is not in 1..={}",
            settings.max_lanes,
            tally_core::sequence::MAX_LANES
        )));
    }
    if settings.max_request_bytes == 0 || settings.max_response_bytes == 0 {
        return Err(StartError::Config("body limits must be positive".into()));
    }
    for r in &settings.routes {
        if let Price::Metered(m) = &r.price {
            m.check()
                .map_err(|e| StartError::Config(format!("route {}: {e}", r.path)))?;
        }
    }
    Ok((contract, payee, token))
}

impl Gateway {
    /// Opens the log and bindings under `settings.data_dir` and renders the terms. The
    /// gateway holds no payee key: it meters, but cannot cosign cooperative closes.
    pub fn open(
        settings: Settings,
        key: SecretKey,
        funding: Arc<dyn tally_chain::Funding>,
    ) -> Result<Gateway, StartError> {
        Self::open_with_payee(settings, key, funding, None)
    }

    /// [`open`](Self::open), also holding the payee's wallet key so the gateway can cosign
    /// cooperative closes (spec/HTTP.md §5.4). The key must be `pay_to`'s
    /// ([`StartError::PayeeKeyMismatch`]).
    pub fn open_with_payee(
        settings: Settings,
        key: SecretKey,
        funding: Arc<dyn tally_chain::Funding>,
        payee_key: Option<PrivateKeySigner>,
    ) -> Result<Gateway, StartError> {
        check_settings(&settings, payee_key.as_ref())?;
        std::fs::create_dir_all(&settings.data_dir)?;
        let store = StoreSlot::open(settings.data_dir.join("log"), settings.store.clone())?;
        let bindings = Bindings::open(&settings.data_dir.join("bindings"))?;
        let gateway = Self::build(
            settings,
            key,
            funding,
            payee_key,
            Backend::Sled(Arc::new(store)),
            Side::Sled(Arc::new(bindings)),
        )?;
        // Disputes are judged under the terms a record was signed under, so every document
        // ever served is kept (spec/HTTP.md §7).
        if let Side::Sled(b) = &gateway.inner.side {
            b.remember_terms(&gateway.inner.terms_hash, &gateway.inner.terms_bytes)?;
        }
        Ok(gateway)
    }

    /// A gateway node of a cluster (spec/CLUSTER.md): its log and side state in the
    /// PostgreSQL database `node` is joined to, shared with the other nodes. No sled store is
    /// opened; `settings.data_dir` is unused.
    pub async fn open_cluster(
        settings: Settings,
        key: SecretKey,
        funding: Arc<dyn tally_chain::Funding>,
        payee_key: Option<PrivateKeySigner>,
        node: Arc<tally_store_pg::PgNode>,
    ) -> Result<Gateway, StartError> {
        let gateway = Self::build(
            settings,
            key,
            funding,
            payee_key,
            Backend::Pg(node.clone()),
            Side::Pg(node),
        )?;
        let i = &gateway.inner;
        i.side
            .remember_terms(i.terms_hash, i.terms_bytes.to_vec())
            .await
            .map_err(|e| {
                StartError::Config(format!("storing the terms in the cluster database: {e}"))
            })?;
        Ok(gateway)
    }

    /// The gateway over a store, with the terms rendered.
    fn build(
        settings: Settings,
        key: SecretKey,
        funding: Arc<dyn tally_chain::Funding>,
        payee_key: Option<PrivateKeySigner>,
        store: Backend,
        side: Side,
    ) -> Result<Gateway, StartError> {
        let (contract, payee, token) = check_settings(&settings, payee_key.as_ref())?;
        let public = key.public();
        let terms = Terms {
            format: TERMS_FORMAT.into(),
            provider_key: public,
            chain: settings.chain.clone(),
            credit_limit: Amount(settings.credit_limit),
            max_lanes: settings.max_lanes,
            checkpoint: settings.checkpoint.clone(),
            charge_server_errors: settings.charge_server_errors,
            refunds: settings.refunds.clone(),
            max_request_bytes: settings.max_request_bytes,
            max_response_bytes: settings.max_response_bytes,
            routes: settings.routes.clone(),
            unmatched: settings.unmatched,
        };
        let terms_bytes = Bytes::from(terms.render());
        let terms_hash = tally_http::terms::terms_hash(&terms_bytes);
        let metrics = Metrics::default();
        let funding =
            FundingCache::new(funding, settings.funding_ttl).counting(metrics.chain_reads.clone());
        let settings_capacity = settings.max_channels_in_memory;
        Ok(Gateway {
            inner: Arc::new(Inner {
                network: network(settings.chain.chain_id),
                key,
                public,
                terms,
                terms_bytes,
                terms_hash,
                contract,
                payee,
                token,
                settings,
                store,
                side,
                channels: Channels::new(settings_capacity),
                funding,
                metrics,
                page_renders: tokio::sync::Semaphore::new(1),
                payee_key,
                promising: Default::default(),
                promises: Default::default(),
                settlement: Default::default(),
                console_logins: Default::default(),
                relay: std::sync::OnceLock::new(),
            }),
        })
    }
}
