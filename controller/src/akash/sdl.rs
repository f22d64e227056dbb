//! Renders the SDL templates in `deploy/akash/` for one replica.
//!
//! Each `{{name}}` placeholder is replaced by a JSON value. JSON is valid
//! YAML flow syntax, so image names, model ids and keys never need YAML
//! escaping and cannot break the document. The tag placeholder is left for
//! [`super::tag::apply`], which `create_deployment` calls with the real tag.

use leasegate_fleet::{Engine, Secret};
use serde_json::{Value, json};

use super::tag::PLACEHOLDER;

/// The built-in templates; the files are the documentation operators read.
pub const VLLM_TEMPLATE: &str = include_str!("../../../deploy/akash/vllm.sdl.yaml");
pub const TGI_TEMPLATE: &str = include_str!("../../../deploy/akash/tgi.sdl.yaml");

/// The container port both engines listen on.
pub const CONTAINER_PORT: u16 = 8000;

/// The Akash-run auditor that signs audited providers' attributes.
pub const DEFAULT_AUDITOR: &str = "akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63";

/// How the replica is reached from the internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expose {
    /// `as: 80`: an ingress hostname in the lease status `uris`.
    Ingress,
    /// `as: 8000`: a NodePort in `forwarded_ports`.
    Port,
}

/// One acceptable GPU: model as Akash names it (`h100`) and optional RAM.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<String>,
}

/// Everything that varies between replicas.
#[derive(Clone, Debug)]
pub struct SdlParams {
    pub engine: Engine,
    pub image: String,
    /// The Hugging Face model id the server loads.
    pub model: String,
    /// The name clients use; defaults to `model`.
    pub served_model_name: Option<String>,
    pub gpus: Vec<GpuSpec>,
    pub gpu_units: u32,
    pub cpu_units: f64,
    /// Kubernetes quantities: `64Gi`.
    pub memory: String,
    pub storage: String,
    pub shm: String,
    pub expose: Expose,
    /// Highest acceptable price, uact per block.
    pub price_cap_uact: u64,
    /// The per-replica key the server demands from callers.
    pub replica_key: Secret,
    /// For gated models.
    pub hf_token: Option<Secret>,
    /// Akash `location-region` the provider must have.
    pub region: Option<String>,
    /// Auditors whose signature a provider must carry; empty = any provider.
    pub signed_by: Vec<String>,
    /// Extra engine flags, appended as given.
    pub extra_args: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SdlError {
    #[error("engine {0:?} has no Akash template")]
    NoTemplate(Engine),
    #[error("invalid SDL parameter {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("template placeholder {0} was not filled")]
    Unfilled(String),
}

/// Converts a $/h cap into uact per block, rounding down so the cap holds.
pub fn uact_per_block(usd_per_hour: f64) -> u64 {
    let v = usd_per_hour * 1e6 / crate::market::BLOCKS_PER_HOUR;
    if v.is_finite() && v > 0.0 {
        v.floor() as u64
    } else {
        0
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SdlError {
    SdlError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Renders the engine's SDL; the result still holds the tag placeholder.
pub fn render(p: &SdlParams) -> Result<String, SdlError> {
    let template = match p.engine {
        Engine::Vllm => VLLM_TEMPLATE,
        Engine::Tgi => TGI_TEMPLATE,
        other => return Err(SdlError::NoTemplate(other)),
    };
    if p.image.trim().is_empty() {
        return Err(invalid("image", "empty"));
    }
    if p.model.trim().is_empty() {
        return Err(invalid("model", "empty"));
    }
    if p.gpus.is_empty() || p.gpus.iter().any(|g| g.model.trim().is_empty()) {
        return Err(invalid("gpus", "at least one named GPU model is needed"));
    }
    if p.gpu_units == 0 {
        return Err(invalid("gpu_units", "must be at least 1"));
    }
    if !(p.cpu_units.is_finite() && p.cpu_units > 0.0) {
        return Err(invalid("cpu_units", "must be positive"));
    }
    if p.price_cap_uact == 0 {
        return Err(invalid("price_cap_uact", "must be positive"));
    }
    if p.replica_key.expose().len() < 16 {
        return Err(invalid("replica_key", "must be at least 16 characters"));
    }
    let served = p
        .served_model_name
        .clone()
        .unwrap_or_else(|| p.model.clone());
    let port = CONTAINER_PORT.to_string();
    let mut env: Vec<String> = Vec::new();
    let mut args: Vec<String> = match p.engine {
        Engine::Tgi => {
            // The launcher reads --api-key from API_KEY.
            env.push(format!("API_KEY={}", p.replica_key.expose()));
            vec![
                "--model-id".into(),
                p.model.clone(),
                "--hostname".into(),
                "0.0.0.0".into(),
                "--port".into(),
                port,
            ]
        }
        _ => vec![
            "--model".into(),
            p.model.clone(),
            "--served-model-name".into(),
            served,
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            port,
            "--api-key".into(),
            p.replica_key.expose().to_owned(),
        ],
    };
    args.extend(p.extra_args.iter().cloned());
    if let Some(t) = &p.hf_token {
        env.push(format!("HF_TOKEN={}", t.expose()));
    }
    let gpus: Vec<Value> = p
        .gpus
        .iter()
        .map(|g| match &g.ram {
            Some(ram) => json!({"model": g.model.to_ascii_lowercase(), "ram": ram}),
            None => json!({"model": g.model.to_ascii_lowercase()}),
        })
        .collect();
    let attributes = match &p.region {
        Some(r) if !r.trim().is_empty() => json!({"location-region": r}),
        _ => json!({}),
    };
    let signed_by = if p.signed_by.is_empty() {
        json!({})
    } else {
        json!({"anyOf": p.signed_by})
    };
    let cpu = if p.cpu_units.fract() == 0.0 {
        json!(p.cpu_units as u64)
    } else {
        json!(p.cpu_units)
    };
    let expose_as = match p.expose {
        Expose::Ingress => 80,
        Expose::Port => CONTAINER_PORT,
    };
    let values: [(&str, Value); 13] = [
        ("image", json!(p.image)),
        ("args", json!(args)),
        ("env", json!(env)),
        ("expose_as", json!(expose_as)),
        ("cpu", cpu),
        ("memory", json!(p.memory)),
        ("storage", json!(p.storage)),
        ("shm", json!(p.shm)),
        ("gpu_units", json!(p.gpu_units)),
        ("gpu_models", json!(gpus)),
        ("placement_attributes", attributes),
        ("signed_by", signed_by),
        ("price_cap", json!(p.price_cap_uact)),
    ];
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), &value.to_string());
    }
    // Only the tag may remain; anything else is a template/renderer mismatch.
    let rest = out.replace(PLACEHOLDER, "");
    if let Some(start) = rest.find("{{") {
        let end = rest[start..]
            .find("}}")
            .map_or(rest.len(), |e| start + e + 2);
        return Err(SdlError::Unfilled(rest[start..end].to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_caps_convert_to_whole_uact_per_block() {
        assert_eq!(uact_per_block(2.71), 4516);
        assert_eq!(uact_per_block(0.0), 0);
        assert_eq!(uact_per_block(f64::NAN), 0);
    }
}
