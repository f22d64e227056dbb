//! The built-in region catalogue: region codes to coordinates, plus great-circle distance and RTT estimates.
//!
//! `region = "eu-central"` in config (or an Akash provider's `location-region`
//! attribute) is enough to place a replica on the map. The catalogue covers
//! every Akash `location-region` value and the common cloud region codes of
//! AWS, GCP and Azure.
//!
//! Coordinates of Akash regions are population-weighted centres of the
//! countries or states the region lists (where the clients of that region
//! are), not geometric centres. Cloud regions sit at the metro area of the
//! region's data centres.

use std::time::Duration;

use serde::Serialize;

use crate::Region;

/// A continent, as the two-letter codes GeoIP databases use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Continent {
    #[serde(rename = "AF")]
    Africa,
    #[serde(rename = "AN")]
    Antarctica,
    #[serde(rename = "AS")]
    Asia,
    #[serde(rename = "EU")]
    Europe,
    #[serde(rename = "NA")]
    NorthAmerica,
    #[serde(rename = "OC")]
    Oceania,
    #[serde(rename = "SA")]
    SouthAmerica,
}

impl Continent {
    /// The two-letter code (`EU`, `NA`, ...).
    pub fn code(self) -> &'static str {
        match self {
            Continent::Africa => "AF",
            Continent::Antarctica => "AN",
            Continent::Asia => "AS",
            Continent::Europe => "EU",
            Continent::NorthAmerica => "NA",
            Continent::Oceania => "OC",
            Continent::SouthAmerica => "SA",
        }
    }

    /// Parses a two-letter continent code, ignoring ASCII case.
    pub fn from_code(code: &str) -> Option<Continent> {
        [
            Continent::Africa,
            Continent::Antarctica,
            Continent::Asia,
            Continent::Europe,
            Continent::NorthAmerica,
            Continent::Oceania,
            Continent::SouthAmerica,
        ]
        .into_iter()
        .find(|c| c.code().eq_ignore_ascii_case(code))
    }
}

/// One catalogue entry.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RegionInfo {
    /// The canonical (lower-case) code, e.g. `eu-central` or `us-east-1`.
    pub code: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// ISO 3166-1 alpha-2, only when the region lies in one country.
    pub country: Option<&'static str>,
    pub continent: Continent,
}

impl RegionInfo {
    /// The fleet-contract form of this region.
    pub fn to_region(&self) -> Region {
        Region {
            code: self.code.to_owned(),
            country: self.country.map(str::to_owned),
            lat: self.lat,
            lon: self.lon,
        }
    }
}

/// Looks a region code up, ignoring ASCII case and surrounding whitespace.
pub fn lookup(code: &str) -> Option<RegionInfo> {
    let code = code.trim();
    // A linear scan over ~200 short codes costs well under a microsecond and
    // needs no lazily built index.
    CATALOGUE
        .iter()
        .find(|r| r.code.eq_ignore_ascii_case(code))
        .copied()
}

/// Every catalogue entry.
pub fn all() -> &'static [RegionInfo] {
    CATALOGUE
}

/// Mean Earth radius (IUGG), in km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance between two points given in degrees, in km.
pub fn haversine_km(a_lat: f64, a_lon: f64, b_lat: f64, b_lon: f64) -> f64 {
    let (phi1, phi2) = (a_lat.to_radians(), b_lat.to_radians());
    let d_phi = (b_lat - a_lat).to_radians();
    let d_lambda = (b_lon - a_lon).to_radians();
    let h = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    // Rounding can push `h` a hair past 1 for antipodal points; asin would
    // then return NaN.
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

/// Light in fibre covers about 200 km per millisecond (refractive index ~1.5).
const FIBRE_KM_PER_MS: f64 = 200.0;
/// Real routes are longer than the great circle: cables follow coasts and
/// land routes, and traffic hops through exchange points. 1.5 matches typical
/// measured RTTs between major metros within ~20%.
const ROUTE_FACTOR: f64 = 1.5;
/// Serialisation, switching and last-mile delay that exist even next door.
const BASE_RTT_MS: f64 = 2.0;
/// Half the Earth's circumference: no two points are further apart.
const MAX_DISTANCE_KM: f64 = 20_040.0;

/// Estimated network round-trip time for a great-circle distance in km.
///
/// `RTT = 2 × km × 1.5 / (200 km/ms) + 2 ms`: there and back through fibre
/// at two thirds of the speed of light, along a route 1.5× the great circle,
/// plus a constant for the last mile. Frankfurt–Virginia (~6,500 km) gives
/// ~100 ms, London–Paris (~340 km) ~7 ms. Negative or NaN inputs count as 0
/// km and huge ones are capped at half the circumference, so this never
/// panics.
pub fn estimated_rtt(km: f64) -> Duration {
    let km = if km.is_nan() {
        0.0
    } else {
        km.clamp(0.0, MAX_DISTANCE_KM)
    };
    let ms = 2.0 * km * ROUTE_FACTOR / FIBRE_KM_PER_MS + BASE_RTT_MS;
    Duration::from_secs_f64(ms / 1000.0)
}

const fn r(
    code: &'static str,
    lat: f64,
    lon: f64,
    country: Option<&'static str>,
    continent: Continent,
) -> RegionInfo {
    RegionInfo {
        code,
        lat,
        lon,
        country,
        continent,
    }
}

use Continent::{
    Africa as AF, Asia as AS, Europe as EU, NorthAmerica as NA, Oceania as OC, SouthAmerica as SA,
};

const fn c(code: &'static str) -> Option<&'static str> {
    Some(code)
}

const N: Option<&'static str> = None;

#[rustfmt::skip]
static CATALOGUE: &[RegionInfo] = &[
    // Akash `location-region` values (UN geoscheme). Population-weighted
    // centres of the listed provinces, states or countries.
    r("na-ca-west", 49.3, -123.0, c("CA"), NA),
    r("na-ca-central", 44.6, -77.3, c("CA"), NA),
    r("na-ca-prairie", 51.6, -109.2, c("CA"), NA),
    r("na-ca-atlantic", 45.9, -62.4, c("CA"), NA),
    r("na-ca-north", 62.2, -107.4, c("CA"), NA),
    r("na-us-west", 38.4, -118.8, c("US"), NA),
    r("na-us-southwest", 32.0, -100.2, c("US"), NA),
    r("na-us-midwest", 41.4, -87.6, c("US"), NA),
    r("na-us-southeast", 33.1, -83.2, c("US"), NA),
    r("na-us-northeast", 41.2, -74.9, c("US"), NA),
    r("central-america", 13.3, -87.6, N, NA),
    r("caribbean", 19.1, -72.9, N, NA),
    r("sa-north", 6.6, -71.7, N, SA),
    r("sa-west", -9.1, -75.3, N, SA),
    r("sa-south", -33.1, -62.7, N, SA),
    r("sa-brazil", -18.5, -46.0, c("BR"), SA),
    r("eu-central", 50.2, 13.3, N, EU),
    r("eu-east", 53.5, 41.0, N, EU),
    r("eu-north", 59.2, 14.7, N, EU),
    r("eu-southeast", 44.3, 22.6, N, EU),
    r("eu-south", 42.3, 13.7, N, EU),
    r("eu-southwest", 39.9, -4.4, N, EU),
    r("eu-west", 50.3, 1.1, N, EU),
    r("af-east", -1.0, 35.9, N, AF),
    r("af-middle", -1.7, 18.4, N, AF),
    r("af-north", 28.6, 19.6, N, AF),
    r("af-south", -27.3, 27.1, N, AF),
    r("af-west", 9.5, 1.2, N, AF),
    r("as-central", 41.7, 68.9, N, AS),
    r("as-east", 32.8, 116.0, N, AS),
    r("as-southeast", 6.0, 108.5, N, AS),
    r("as-south", 24.8, 78.5, N, AS),
    r("as-west", 31.7, 40.0, N, AS),
    r("oc-aus", -33.0, 146.5, c("AU"), OC),
    r("oc-nz", -38.5, 175.0, c("NZ"), OC),
    r("oc-mel", -8.1, 149.7, N, OC),
    r("oc-mic", 8.5, 156.5, N, OC),
    r("oc-pol", -17.8, -159.0, N, OC),

    // AWS.
    r("us-east-1", 39.04, -77.49, c("US"), NA),
    r("us-east-2", 39.96, -83.00, c("US"), NA),
    r("us-west-1", 37.35, -121.96, c("US"), NA),
    r("us-west-2", 45.84, -119.70, c("US"), NA),
    r("us-gov-east-1", 39.96, -83.00, c("US"), NA),
    r("us-gov-west-1", 45.52, -122.68, c("US"), NA),
    r("ca-central-1", 45.50, -73.57, c("CA"), NA),
    r("ca-west-1", 51.05, -114.07, c("CA"), NA),
    r("mx-central-1", 20.59, -100.39, c("MX"), NA),
    r("sa-east-1", -23.55, -46.63, c("BR"), SA),
    r("eu-central-1", 50.11, 8.68, c("DE"), EU),
    r("eu-central-2", 47.37, 8.54, c("CH"), EU),
    r("eu-west-1", 53.35, -6.26, c("IE"), EU),
    r("eu-west-2", 51.51, -0.13, c("GB"), EU),
    r("eu-west-3", 48.86, 2.35, c("FR"), EU),
    r("eu-south-1", 45.46, 9.19, c("IT"), EU),
    r("eu-south-2", 41.65, -0.88, c("ES"), EU),
    r("eu-north-1", 59.33, 18.07, c("SE"), EU),
    r("eusc-de-east-1", 52.39, 13.06, c("DE"), EU),
    r("il-central-1", 32.09, 34.78, c("IL"), AS),
    r("me-south-1", 26.07, 50.56, c("BH"), AS),
    r("me-central-1", 25.20, 55.27, c("AE"), AS),
    r("af-south-1", -33.92, 18.42, c("ZA"), AF),
    r("ap-east-1", 22.32, 114.17, c("HK"), AS),
    r("ap-east-2", 25.03, 121.56, c("TW"), AS),
    r("ap-south-1", 19.08, 72.88, c("IN"), AS),
    r("ap-south-2", 17.39, 78.49, c("IN"), AS),
    r("ap-southeast-1", 1.35, 103.82, c("SG"), AS),
    r("ap-southeast-2", -33.87, 151.21, c("AU"), OC),
    r("ap-southeast-3", -6.21, 106.85, c("ID"), AS),
    r("ap-southeast-4", -37.81, 144.96, c("AU"), OC),
    r("ap-southeast-5", 3.139, 101.69, c("MY"), AS),
    r("ap-southeast-6", -36.85, 174.76, c("NZ"), OC),
    r("ap-southeast-7", 13.76, 100.50, c("TH"), AS),
    r("ap-northeast-1", 35.68, 139.69, c("JP"), AS),
    r("ap-northeast-2", 37.57, 126.98, c("KR"), AS),
    r("ap-northeast-3", 34.69, 135.50, c("JP"), AS),
    r("cn-north-1", 39.90, 116.40, c("CN"), AS),
    r("cn-northwest-1", 37.51, 105.19, c("CN"), AS),

    // Google Cloud.
    r("us-central1", 41.26, -95.86, c("US"), NA),
    r("us-east1", 33.20, -80.01, c("US"), NA),
    r("us-east4", 39.04, -77.49, c("US"), NA),
    r("us-east5", 39.96, -83.00, c("US"), NA),
    r("us-south1", 32.78, -96.80, c("US"), NA),
    r("us-west1", 45.60, -121.18, c("US"), NA),
    r("us-west2", 34.05, -118.24, c("US"), NA),
    r("us-west3", 40.76, -111.89, c("US"), NA),
    r("us-west4", 36.17, -115.14, c("US"), NA),
    r("northamerica-northeast1", 45.50, -73.57, c("CA"), NA),
    r("northamerica-northeast2", 43.65, -79.38, c("CA"), NA),
    r("northamerica-south1", 20.59, -100.39, c("MX"), NA),
    r("southamerica-east1", -23.55, -46.63, c("BR"), SA),
    r("southamerica-west1", -33.45, -70.67, c("CL"), SA),
    r("europe-west1", 50.45, 3.82, c("BE"), EU),
    r("europe-west2", 51.51, -0.13, c("GB"), EU),
    r("europe-west3", 50.11, 8.68, c("DE"), EU),
    r("europe-west4", 53.44, 6.83, c("NL"), EU),
    r("europe-west6", 47.37, 8.54, c("CH"), EU),
    r("europe-west8", 45.46, 9.19, c("IT"), EU),
    r("europe-west9", 48.86, 2.35, c("FR"), EU),
    r("europe-west10", 52.52, 13.40, c("DE"), EU),
    r("europe-west12", 45.07, 7.69, c("IT"), EU),
    r("europe-north1", 60.57, 27.20, c("FI"), EU),
    r("europe-north2", 59.33, 18.07, c("SE"), EU),
    r("europe-central2", 52.23, 21.01, c("PL"), EU),
    r("europe-southwest1", 40.42, -3.70, c("ES"), EU),
    r("me-central1", 25.29, 51.53, c("QA"), AS),
    r("me-central2", 26.43, 50.10, c("SA"), AS),
    r("me-west1", 32.09, 34.78, c("IL"), AS),
    r("africa-south1", -26.20, 28.05, c("ZA"), AF),
    r("asia-east1", 24.05, 120.52, c("TW"), AS),
    r("asia-east2", 22.32, 114.17, c("HK"), AS),
    r("asia-northeast1", 35.68, 139.69, c("JP"), AS),
    r("asia-northeast2", 34.69, 135.50, c("JP"), AS),
    r("asia-northeast3", 37.57, 126.98, c("KR"), AS),
    r("asia-south1", 19.08, 72.88, c("IN"), AS),
    r("asia-south2", 28.61, 77.21, c("IN"), AS),
    r("asia-southeast1", 1.34, 103.71, c("SG"), AS),
    r("asia-southeast2", -6.21, 106.85, c("ID"), AS),
    r("australia-southeast1", -33.87, 151.21, c("AU"), OC),
    r("australia-southeast2", -37.81, 144.96, c("AU"), OC),

    // Azure.
    r("eastus", 37.37, -79.82, c("US"), NA),
    r("eastus2", 36.67, -78.39, c("US"), NA),
    r("centralus", 41.59, -93.60, c("US"), NA),
    r("northcentralus", 41.88, -87.63, c("US"), NA),
    r("southcentralus", 29.42, -98.49, c("US"), NA),
    r("westcentralus", 41.14, -104.82, c("US"), NA),
    r("westus", 37.78, -122.42, c("US"), NA),
    r("westus2", 47.23, -119.85, c("US"), NA),
    r("westus3", 33.45, -112.07, c("US"), NA),
    r("usgovvirginia", 37.37, -79.82, c("US"), NA),
    r("usgovarizona", 33.45, -112.07, c("US"), NA),
    r("usgovtexas", 29.42, -98.49, c("US"), NA),
    r("canadacentral", 43.65, -79.38, c("CA"), NA),
    r("canadaeast", 46.81, -71.21, c("CA"), NA),
    r("mexicocentral", 20.59, -100.39, c("MX"), NA),
    r("brazilsouth", -23.55, -46.63, c("BR"), SA),
    r("brazilsoutheast", -22.91, -43.17, c("BR"), SA),
    r("chilecentral", -33.45, -70.67, c("CL"), SA),
    r("northeurope", 53.35, -6.26, c("IE"), EU),
    r("westeurope", 52.37, 4.90, c("NL"), EU),
    r("uksouth", 51.51, -0.13, c("GB"), EU),
    r("ukwest", 51.48, -3.18, c("GB"), EU),
    r("francecentral", 48.86, 2.35, c("FR"), EU),
    r("francesouth", 43.30, 5.37, c("FR"), EU),
    r("germanywestcentral", 50.11, 8.68, c("DE"), EU),
    r("germanynorth", 52.52, 13.40, c("DE"), EU),
    r("switzerlandnorth", 47.37, 8.54, c("CH"), EU),
    r("switzerlandwest", 46.20, 6.14, c("CH"), EU),
    r("norwayeast", 59.91, 10.75, c("NO"), EU),
    r("norwaywest", 58.97, 5.73, c("NO"), EU),
    r("swedencentral", 60.67, 17.14, c("SE"), EU),
    r("swedensouth", 55.61, 13.00, c("SE"), EU),
    r("polandcentral", 52.23, 21.01, c("PL"), EU),
    r("italynorth", 45.46, 9.19, c("IT"), EU),
    r("spaincentral", 40.42, -3.70, c("ES"), EU),
    r("belgiumcentral", 50.85, 4.35, c("BE"), EU),
    r("eastasia", 22.32, 114.17, c("HK"), AS),
    r("southeastasia", 1.35, 103.82, c("SG"), AS),
    r("japaneast", 35.68, 139.69, c("JP"), AS),
    r("japanwest", 34.69, 135.50, c("JP"), AS),
    r("koreacentral", 37.57, 126.98, c("KR"), AS),
    r("koreasouth", 35.18, 129.08, c("KR"), AS),
    r("centralindia", 18.52, 73.86, c("IN"), AS),
    r("southindia", 13.08, 80.27, c("IN"), AS),
    r("westindia", 19.08, 72.88, c("IN"), AS),
    r("jioindiawest", 22.47, 70.06, c("IN"), AS),
    r("jioindiacentral", 21.15, 79.09, c("IN"), AS),
    r("indonesiacentral", -6.21, 106.85, c("ID"), AS),
    r("malaysiawest", 3.139, 101.69, c("MY"), AS),
    r("chinaeast", 31.23, 121.47, c("CN"), AS),
    r("chinaeast2", 31.23, 121.47, c("CN"), AS),
    r("chinaeast3", 31.23, 121.47, c("CN"), AS),
    r("chinanorth", 39.90, 116.40, c("CN"), AS),
    r("chinanorth2", 39.90, 116.40, c("CN"), AS),
    r("chinanorth3", 38.04, 114.51, c("CN"), AS),
    r("uaenorth", 25.20, 55.27, c("AE"), AS),
    r("uaecentral", 24.45, 54.38, c("AE"), AS),
    r("qatarcentral", 25.29, 51.53, c("QA"), AS),
    r("israelcentral", 32.09, 34.78, c("IL"), AS),
    r("southafricanorth", -26.20, 28.05, c("ZA"), AF),
    r("southafricawest", -33.92, 18.42, c("ZA"), AF),
    r("australiaeast", -33.87, 151.21, c("AU"), OC),
    r("australiasoutheast", -37.81, 144.96, c("AU"), OC),
    r("australiacentral", -35.28, 149.13, c("AU"), OC),
    r("australiacentral2", -35.28, 149.13, c("AU"), OC),
    r("newzealandnorth", -36.85, 174.76, c("NZ"), OC),
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn codes_are_unique_lower_case_and_coordinates_valid() {
        let mut seen = HashSet::new();
        for r in all() {
            assert!(seen.insert(r.code), "duplicate code {}", r.code);
            assert_eq!(r.code, r.code.to_ascii_lowercase(), "{}", r.code);
            assert!((-90.0..=90.0).contains(&r.lat), "{}", r.code);
            assert!((-180.0..=180.0).contains(&r.lon), "{}", r.code);
            if let Some(cc) = r.country {
                assert!(
                    cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_uppercase()),
                    "{cc}"
                );
            }
        }
        assert!(all().len() > 150, "{}", all().len());
    }

    #[test]
    fn lookup_ignores_case_and_whitespace() {
        let r = lookup(" EU-Central ").unwrap();
        assert_eq!(r.code, "eu-central");
        assert_eq!(r.continent, Continent::Europe);
        assert_eq!(lookup("AP-NORTHEAST-1").unwrap().country, Some("JP"));
        assert_eq!(lookup("us-central1").unwrap().country, Some("US"));
        assert_eq!(lookup("westeurope").unwrap().country, Some("NL"));
        assert!(lookup("eu-centra").is_none());
        assert!(lookup("").is_none());
    }

    #[test]
    fn single_country_regions_carry_their_country() {
        for (code, cc) in [("na-us-west", "US"), ("sa-brazil", "BR"), ("oc-aus", "AU")] {
            assert_eq!(lookup(code).unwrap().country, Some(cc), "{code}");
        }
        // Regions spanning several countries must not claim one.
        assert_eq!(lookup("eu-west").unwrap().country, None);
        assert_eq!(lookup("as-east").unwrap().country, None);
    }

    #[test]
    fn regions_lie_near_where_they_say() {
        // Frankfurt is in eu-central-1 and near eu-central.
        let fra = (50.11, 8.68);
        let d = |code: &str| {
            let r = lookup(code).unwrap();
            haversine_km(fra.0, fra.1, r.lat, r.lon)
        };
        assert!(d("eu-central-1") < 1.0);
        assert!(d("eu-central") < d("eu-west-2"));
        assert!(d("eu-central") < d("na-us-west"));
        assert!(d("na-us-west") > d("as-west"));
    }

    #[test]
    fn haversine_matches_known_distances() {
        // London–Paris ~344 km, Frankfurt–Ashburn ~6,550 km.
        let lp = haversine_km(51.5074, -0.1278, 48.8566, 2.3522);
        assert!((lp - 344.0).abs() < 5.0, "{lp}");
        let fa = haversine_km(50.11, 8.68, 39.04, -77.49);
        assert!((fa - 6550.0).abs() < 100.0, "{fa}");
        // Antipodes: half the circumference, not NaN.
        let anti = haversine_km(0.0, 0.0, 0.0, 180.0);
        assert!(
            (anti - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1.0,
            "{anti}"
        );
        assert_eq!(haversine_km(10.0, 20.0, 10.0, 20.0), 0.0);
    }

    #[test]
    fn estimated_rtt_is_monotonic_and_never_panics() {
        assert_eq!(estimated_rtt(0.0), Duration::from_millis(2));
        // 6,500 km: 2 × 6,500 × 1.5 / 200 + 2 = 99.5 ms.
        let far = estimated_rtt(6500.0);
        assert!((far.as_secs_f64() * 1000.0 - 99.5).abs() < 0.01, "{far:?}");
        assert!(estimated_rtt(100.0) < estimated_rtt(1000.0));
        for km in [f64::NAN, -1.0, f64::NEG_INFINITY, f64::INFINITY, f64::MAX] {
            let rtt = estimated_rtt(km);
            assert!(rtt <= estimated_rtt(MAX_DISTANCE_KM), "{km}: {rtt:?}");
        }
    }

    #[test]
    fn to_region_copies_the_entry() {
        let region = lookup("eu-west-1").unwrap().to_region();
        assert_eq!(region.code, "eu-west-1");
        assert_eq!(region.country.as_deref(), Some("IE"));
        assert_eq!(Continent::from_code("eu"), Some(Continent::Europe));
        assert_eq!(Continent::from_code("xx"), None);
    }

    /// Every Akash `location-region` value the Console API lists must be placeable.
    #[test]
    fn catalogue_covers_every_akash_location_region() {
        // `../shared/reference` from the workspace root; a worktree elsewhere
        // can point LEASEGATE_REFERENCE_DIR at the folder instead.
        let dir = std::env::var_os("LEASEGATE_REFERENCE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference")
            });
        let path = dir.join("akash/console-provider-attributes.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            println!("skipping: reference file {} is absent", path.display());
            return;
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let values = json["location-region"]["values"].as_array().unwrap();
        assert!(!values.is_empty());
        let missing: Vec<&str> = values
            .iter()
            .map(|v| v["key"].as_str().unwrap())
            .filter(|code| lookup(code).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "missing from the catalogue: {missing:?}"
        );
    }
}
