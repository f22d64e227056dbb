//! Quick-start endpoint specs on the command line: `URL[,key=value]...`.

use std::collections::BTreeMap;

use leasegate_fleet::{Credential, Engine};
use url::Url;

use crate::config::{EndpointSpec, FallbackSpec, RegionSpec};

/// `--endpoint URL[,key_env=NAME][,region=CODE][,lat=F,lon=F][,max_concurrency=N][,engine=E][,id=ID]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointArg {
    pub url: Url,
    pub id: Option<String>,
    pub key_env: Option<String>,
    pub region: Option<String>,
    pub coords: Option<(f64, f64)>,
    pub max_concurrency: Option<u32>,
    pub engine: Engine,
}

/// `--fallback URL[,key_env=NAME][,model=UPSTREAM_MODEL][,id=ID][,region=CODE]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FallbackArg {
    pub url: Url,
    pub id: Option<String>,
    pub key_env: Option<String>,
    /// Every discovered model is sent to the fallback under this name.
    pub model: Option<String>,
    pub region: Option<String>,
}

fn split(spec: &str) -> Result<(Url, BTreeMap<String, String>), String> {
    let mut parts = spec.split(',');
    let raw_url = parts.next().unwrap_or_default().trim();
    let url = Url::parse(raw_url).map_err(|e| format!("`{raw_url}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{raw_url}`: scheme must be http or https"));
    }
    let mut opts = BTreeMap::new();
    for part in parts {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected key=value"))?;
        if opts
            .insert(k.trim().to_owned(), v.trim().to_owned())
            .is_some()
        {
            return Err(format!("`{k}` given twice"));
        }
    }
    Ok((url, opts))
}

fn unknown(opts: &BTreeMap<String, String>, known: &[&str]) -> Result<(), String> {
    match opts.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown option `{k}`; expected one of {}",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

fn number<T: std::str::FromStr>(
    opts: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<T>, String> {
    opts.get(key)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("`{key}={v}` is not a number"))
        })
        .transpose()
}

impl std::str::FromStr for EndpointArg {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let (url, opts) = split(spec)?;
        unknown(
            &opts,
            &[
                "id",
                "key_env",
                "region",
                "lat",
                "lon",
                "max_concurrency",
                "engine",
            ],
        )?;
        let coords = match (number(&opts, "lat")?, number(&opts, "lon")?) {
            (Some(lat), Some(lon)) => Some((lat, lon)),
            (None, None) => None,
            _ => return Err("lat and lon go together".into()),
        };
        let engine = match opts.get("engine").map(String::as_str) {
            None | Some("vllm") => Engine::Vllm,
            Some("tgi") => Engine::Tgi,
            Some("openai") => Engine::Openai,
            Some(other) => return Err(format!("engine `{other}` is not vllm, tgi or openai")),
        };
        Ok(Self {
            url,
            id: opts.get("id").cloned(),
            key_env: opts.get("key_env").cloned(),
            region: opts.get("region").cloned(),
            coords,
            max_concurrency: number(&opts, "max_concurrency")?,
            engine,
        })
    }
}

impl std::str::FromStr for FallbackArg {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let (url, opts) = split(spec)?;
        unknown(&opts, &["id", "key_env", "model", "region"])?;
        Ok(Self {
            url,
            id: opts.get("id").cloned(),
            key_env: opts.get("key_env").cloned(),
            model: opts.get("model").cloned(),
            region: opts.get("region").cloned(),
        })
    }
}

impl EndpointArg {
    pub fn credential(&self) -> Option<Credential> {
        self.key_env.clone().map(|var| Credential::Env { var })
    }

    /// The typed endpoint once its models are known.
    pub fn into_spec(self, index: usize, models: Vec<String>) -> EndpointSpec {
        EndpointSpec {
            id: self
                .id
                .clone()
                .unwrap_or_else(|| format!("endpoint-{index}")),
            credential: self.credential(),
            url: self.url,
            models,
            engine: self.engine,
            region: RegionSpec::resolve(
                self.region.unwrap_or_else(|| "unknown".into()),
                self.coords,
            ),
            price_per_hour_usd: 0.0,
            max_concurrency: self.max_concurrency.unwrap_or(16).max(1),
        }
    }
}

impl FallbackArg {
    /// The typed fallback serving `models`, renamed when `model=` was given.
    pub fn into_spec(self, index: usize, models: &[String]) -> FallbackSpec {
        let mapping = models
            .iter()
            .map(|m| (m.clone(), self.model.clone().unwrap_or_else(|| m.clone())))
            .collect();
        FallbackSpec {
            id: self.id.unwrap_or_else(|| format!("fallback-{index}")),
            url: self.url,
            credential: self.key_env.map(|var| Credential::Env { var }),
            models: mapping,
            price_per_1m_input_usd: 0.0,
            price_per_1m_output_usd: 0.0,
            region: RegionSpec::resolve(self.region.unwrap_or_else(|| "unknown".into()), None),
            max_concurrency: 256,
        }
    }
}

/// `--geoip FILE` and `--trusted-proxy CIDR`, the quick-start forms of
/// `[geo] mmdb` and `[geo] trusted_proxies`; given flags replace the file's lists.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct GeoArgs {
    /// GeoIP City database (GeoLite2 or DB-IP); repeat for a separate IPv4 and IPv6 pair.
    #[arg(long = "geoip", value_name = "FILE")]
    pub geoip: Vec<std::path::PathBuf>,
    /// Peer address or CIDR whose `X-Forwarded-For`/`Forwarded` is believed; repeatable.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl GeoArgs {
    pub fn apply(self, geo: &mut crate::config::GeoConfig) {
        if !self.geoip.is_empty() {
            geo.mmdb = self.geoip;
        }
        if !self.trusted_proxies.is_empty() {
            geo.trusted_proxies = self.trusted_proxies;
        }
    }
}

/// A CIDR, or a bare address meaning just that host.
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geo_flags_replace_the_config_lists() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            geo: GeoArgs,
        }
        let t = T::try_parse_from([
            "t",
            "--geoip",
            "v4.mmdb",
            "--geoip",
            "v6.mmdb",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "::1",
        ])
        .unwrap();
        let mut geo = crate::config::GeoConfig::default();
        t.geo.apply(&mut geo);
        assert_eq!(geo.mmdb.len(), 2);
        assert_eq!(geo.trusted_proxies[1].to_string(), "::1/128");
        assert!(T::try_parse_from(["t", "--trusted-proxy", "nope"]).is_err());
    }

    #[test]
    fn parses_an_endpoint_with_options() {
        let e: EndpointArg =
            "http://10.0.0.7:8000,key_env=GPU_KEY,region=eu-central,max_concurrency=8"
                .parse()
                .unwrap();
        assert_eq!(e.url.as_str(), "http://10.0.0.7:8000/");
        assert_eq!(e.key_env.as_deref(), Some("GPU_KEY"));
        assert_eq!(e.region.as_deref(), Some("eu-central"));
        assert_eq!(e.max_concurrency, Some(8));
        assert_eq!(e.coords, None);
    }

    #[test]
    fn refuses_unknown_options_and_bad_urls() {
        assert!(
            "http://x,colour=red"
                .parse::<EndpointArg>()
                .unwrap_err()
                .contains("colour")
        );
        assert!("not a url".parse::<EndpointArg>().is_err());
        assert!("ftp://x".parse::<EndpointArg>().is_err());
        assert!("http://x,lat=1".parse::<EndpointArg>().is_err());
    }

    #[test]
    fn a_fallback_model_renames_every_discovered_model() {
        let f: FallbackArg = "https://api.example.com/v1,key_env=K,model=gpt-4o-mini"
            .parse()
            .unwrap();
        let spec = f.into_spec(0, &["llama".into(), "qwen".into()]);
        assert_eq!(spec.upstream_model("llama"), Some("gpt-4o-mini"));
        assert_eq!(spec.to_fleet().url, "https://api.example.com");
    }
}
