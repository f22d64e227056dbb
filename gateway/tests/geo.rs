//! Geo stage: GeoIP lookups over test-built mmdb files (both schemas), corrupt files and reload.

// Test code: helpers outside `#[test]` fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::support::mmdb_writer::{MmdbWriter, Value};
use ipnet::IpNet;
use leasegate_fleet::region::Continent;
use leasegate_gateway::geo::{GeoDb, GeoError, GeoOptions, Location, LocationSource, locate};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A fresh directory per test under cargo's per-target scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("geo")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `../shared/reference` from the workspace root, or LEASEGATE_REFERENCE_DIR.
fn reference_dir() -> PathBuf {
    std::env::var_os("LEASEGATE_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference"))
}

/// A GeoIP2-City-shaped record.
fn city(lat: f64, lon: f64, country: &str, continent: &str, name: &str) -> Value {
    Value::map([
        (
            "city",
            Value::map([("names", Value::map([("en", Value::str(name))]))]),
        ),
        (
            "continent",
            Value::map([
                ("code", Value::str(continent)),
                ("geoname_id", Value::U32(6255148)),
            ]),
        ),
        (
            "country",
            Value::map([
                ("iso_code", Value::str(country)),
                ("is_in_european_union", Value::Bool(true)),
            ]),
        ),
        (
            "location",
            Value::map([
                ("accuracy_radius", Value::U16(100)),
                ("latitude", Value::Double(lat)),
                ("longitude", Value::Double(lon)),
                ("time_zone", Value::str("Europe/Berlin")),
            ]),
        ),
    ])
}

/// An ip-location-db (DB-IP) flat record: f32 coordinates, a plain `city` string.
fn flat(lat: f32, lon: f32, country: &str, name: &str) -> Value {
    Value::map([
        ("city", Value::str(name)),
        ("country_code", Value::str(country)),
        ("latitude", Value::Float(lat)),
        ("longitude", Value::Float(lon)),
        ("postcode", Value::str("")),
        ("state1", Value::str("State")),
        ("timezone", Value::str("UTC")),
    ])
}

fn city_db(dir: &Path, record_size: u16) -> PathBuf {
    let mut w = MmdbWriter::new("GeoIP2-City", 6, record_size);
    w.insert(
        net("81.2.69.0/24"),
        &city(51.51, -0.09, "GB", "EU", "London"),
    );
    // A more specific network inside a covering one must win.
    w.insert(
        net("81.2.69.128/25"),
        &city(53.48, -2.24, "GB", "EU", "Manchester"),
    );
    w.insert(
        net("2a02:db8::/32"),
        &city(52.52, 13.40, "DE", "EU", "Berlin"),
    );
    w.insert(
        net("10.0.0.0/8"),
        &Value::map([("note", Value::str("private, no location"))]),
    );
    w.write_to(dir, "city.mmdb")
}

fn flat_dbs(dir: &Path) -> [PathBuf; 2] {
    let mut v4 = MmdbWriter::new("dbip-city-ipv4", 4, 24);
    v4.insert(
        net("89.160.20.0/24"),
        &flat(58.41, 15.62, "se", "Linköping"),
    );
    v4.insert(
        net("216.160.83.56/29"),
        &flat(47.25, -122.31, "US", "Milton"),
    );
    let mut v6 = MmdbWriter::new("dbip-city-ipv6", 6, 32);
    v6.insert(net("2400:cb00::/32"), &flat(35.68, 139.69, "JP", "Tokyo"));
    [
        v4.write_to(dir, "dbip-city-ipv4.mmdb"),
        v6.write_to(dir, "dbip-city-ipv6.mmdb"),
    ]
}

fn assert_near(loc: Location, lat: f64, lon: f64) {
    assert!(
        (loc.lat - lat).abs() < 0.01 && (loc.lon - lon).abs() < 0.01,
        "{loc:?} is not at ({lat}, {lon})"
    );
}

#[test]
fn writer_output_reads_back_through_maxminddb_at_every_record_size() {
    let dir = scratch("writer");
    for size in [24, 28, 32] {
        let mut w = MmdbWriter::new("Test", 6, size);
        // Enough networks that node numbers need more than 16 bits.
        for i in 0..300u32 {
            let n = IpNet::V4(ipnet::Ipv4Net::new((0x0a00_0000 + (i << 8)).into(), 24).unwrap());
            w.insert(
                n,
                &Value::map([
                    ("i", Value::U32(i)),
                    ("big", Value::U64(u64::MAX - u64::from(i))),
                ]),
            );
        }
        let file = w.write_to(&dir, &format!("w{size}.mmdb"));
        let reader = maxminddb::Reader::open_readfile(&file).unwrap();
        assert_eq!(reader.metadata().record_size, size);
        assert_eq!(reader.metadata().node_count as usize, w.node_count());
        reader.verify().unwrap();
        for i in [0u32, 1, 255, 299] {
            let addr = IpAddr::V4((0x0a00_0000 + (i << 8) + 7).into());
            let got: serde_json::Value = reader.lookup(addr).unwrap().decode().unwrap().unwrap();
            assert_eq!(got["i"], i, "size {size}");
            assert_eq!(got["big"], u64::MAX - u64::from(i));
        }
        assert!(!reader.lookup(ip("10.2.0.1")).unwrap().has_data());
    }
}

/// Record values at or above 2^24 need the shared middle-byte nibble of a
/// 28-bit node; a 17 MB value pushes the next data offset there.
#[test]
fn writer_28_bit_records_carry_the_top_nibble() {
    let dir = scratch("writer28");
    let mut w = MmdbWriter::new("Test", 6, 28);
    w.insert(net("192.0.2.0/24"), &Value::Str("x".repeat(17 << 20)));
    // The node for 198.51.100.0/24 gets a small left record (empty) and a
    // large right one, so swapped or lost nibbles change the answers.
    w.insert(net("198.51.100.128/25"), &flat(1.5, 2.5, "AA", "right"));
    w.insert(net("203.0.113.0/25"), &flat(3.5, 4.5, "BB", "left"));
    let file = w.write_to(&dir, "w28.mmdb");
    let db = GeoDb::open(&[file], GeoOptions::default()).unwrap();
    assert_near(db.lookup(ip("198.51.100.200")).unwrap(), 1.5, 2.5);
    assert_eq!(db.lookup(ip("198.51.100.1")), None);
    assert_near(db.lookup(ip("203.0.113.1")).unwrap(), 3.5, 4.5);
    assert_eq!(db.lookup(ip("203.0.113.200")), None);
}

#[test]
fn city_schema_finds_inserted_networks_and_nothing_else() {
    let dir = scratch("city");
    let db = GeoDb::open(&[city_db(&dir, 28)], GeoOptions::default()).unwrap();

    let london = db.lookup(ip("81.2.69.1")).unwrap();
    assert_near(london, 51.51, -0.09);
    assert_eq!(london.country.unwrap(), "GB");
    assert_eq!(london.continent, Some(Continent::Europe));
    assert_near(db.lookup(ip("81.2.69.200")).unwrap(), 53.48, -2.24);

    let berlin = db.lookup(ip("2a02:db8:1::5")).unwrap();
    assert_near(berlin, 52.52, 13.40);
    assert_eq!(berlin.country.unwrap(), "DE");

    // Unknown and coordinate-less addresses are "no location", not errors.
    assert_eq!(db.lookup(ip("81.2.70.1")), None);
    assert_eq!(db.lookup(ip("2a03::1")), None);
    assert_eq!(db.lookup(ip("10.1.2.3")), None);
    // Asking again hits the cache and must say the same.
    assert_eq!(db.lookup(ip("81.2.69.1")), Some(london));
}

#[test]
fn locate_uses_the_forwarded_client_behind_a_trusted_proxy() {
    let dir = scratch("locate");
    let db = GeoDb::open(&[city_db(&dir, 24)], GeoOptions::default()).unwrap();
    let proxy = "10.0.0.3:5000".parse().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-forwarded-for", "81.2.69.7, 10.0.0.9".parse().unwrap());

    let got = locate(Some(&db), proxy, &headers, &[net("10.0.0.0/8")], false);
    assert_eq!(got.ip, ip("81.2.69.7"));
    assert_eq!(got.source, LocationSource::GeoIp);
    assert_eq!(got.location.unwrap().country.unwrap(), "GB");

    // Untrusted, the proxy itself is the client, and 10/8 has no location.
    let got = locate(Some(&db), proxy, &headers, &[], false);
    assert_eq!(got.ip, ip("10.0.0.3"));
    assert_eq!(got.source, LocationSource::Unknown);
    assert_eq!(got.location, None);
}

#[test]
fn v4_mapped_v6_finds_the_v4_record() {
    let dir = scratch("mapped");
    // The writer stores IPv4 only under ::/96 (no ::ffff:0:0/96 alias), so
    // only canonicalisation can find the mapped form.
    let db = GeoDb::open(&[city_db(&dir, 24)], GeoOptions::default()).unwrap();
    let v4 = db.lookup(ip("81.2.69.1"));
    assert!(v4.is_some());
    assert_eq!(db.lookup(ip("::ffff:81.2.69.1")), v4);
    assert_eq!(db.lookup(ip("::ffff:81.2.70.1")), None);
}

#[test]
fn flat_schema_split_v4_and_v6_files() {
    let dir = scratch("flat");
    let db = GeoDb::open(&flat_dbs(&dir), GeoOptions::default()).unwrap();

    let linkoping = db.lookup(ip("89.160.20.112")).unwrap();
    assert_near(linkoping, 58.41, 15.62);
    assert_eq!(linkoping.country.unwrap(), "SE");
    // The flat schema has no continent.
    assert_eq!(linkoping.continent, None);
    assert_eq!(
        db.lookup(ip("216.160.83.60")).unwrap().country.unwrap(),
        "US"
    );
    assert_eq!(db.lookup(ip("::ffff:89.160.20.112")), Some(linkoping));

    // IPv6 goes past the IPv4-only file to the IPv6 one.
    let tokyo = db.lookup(ip("2400:cb00:2048::1")).unwrap();
    assert_near(tokyo, 35.68, 139.69);
    assert_eq!(tokyo.country.unwrap(), "JP");

    assert_eq!(db.lookup(ip("1.2.3.4")), None);
    assert_eq!(db.lookup(ip("2001:db8::1")), None);
    assert_eq!(db.paths().len(), 2);
}

#[test]
fn odd_records_degrade_to_what_they_can_give() {
    let dir = scratch("odd");
    let mut w = MmdbWriter::new("Custom", 6, 24);
    // `country` as a plain string and coordinates as strings: no location.
    w.insert(
        net("192.0.2.0/25"),
        &Value::map([
            ("country", Value::str("NL")),
            ("latitude", Value::str("52")),
        ]),
    );
    // Wrong-typed country but good coordinates: a location without country.
    w.insert(
        net("192.0.2.128/25"),
        &Value::map([
            ("country", Value::str("NL")),
            ("latitude", Value::Double(52.37)),
            ("longitude", Value::Double(4.90)),
        ]),
    );
    // Out-of-range and (0, 0) coordinates mean "unknown".
    w.insert(net("198.51.100.0/25"), &flat(91.0, 10.0, "XX", "nowhere"));
    w.insert(
        net("198.51.100.128/25"),
        &flat(0.0, 0.0, "XX", "null island"),
    );
    // Only the registered country is known.
    w.insert(
        net("203.0.113.0/24"),
        &Value::map([
            (
                "registered_country",
                Value::map([("iso_code", Value::str("FR"))]),
            ),
            (
                "location",
                Value::map([
                    ("latitude", Value::Double(48.86)),
                    ("longitude", Value::Double(2.35)),
                ]),
            ),
        ]),
    );
    let db = GeoDb::open(&[w.write_to(&dir, "odd.mmdb")], GeoOptions::default()).unwrap();
    assert_eq!(db.lookup(ip("192.0.2.1")), None);
    let ams = db.lookup(ip("192.0.2.200")).unwrap();
    assert_near(ams, 52.37, 4.90);
    assert_eq!(ams.country, None);
    assert_eq!(db.lookup(ip("198.51.100.1")), None);
    assert_eq!(db.lookup(ip("198.51.100.200")), None);
    assert_eq!(db.lookup(ip("203.0.113.9")).unwrap().country.unwrap(), "FR");
}

#[test]
fn missing_empty_and_corrupt_files_fail_at_open_naming_the_file() {
    let dir = scratch("corrupt");
    let missing = dir.join("nope.mmdb");
    let err = GeoDb::open(&[&missing], GeoOptions::default()).unwrap_err();
    assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.mmdb"), "{err}");

    let good = city_db(&dir, 24);
    let bytes = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.mmdb", vec![]),
        ("text.mmdb", b"this is not a database".to_vec()),
        ("truncated.mmdb", bytes[..bytes.len() / 2].to_vec()),
        // The metadata marker is present but the map after it is cut.
        ("cut-metadata.mmdb", bytes[..bytes.len() - 20].to_vec()),
    ];
    for (name, data) in cases {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        let err = GeoDb::open(&[&good, &path], GeoOptions::default()).unwrap_err();
        assert!(matches!(err, GeoError::Invalid { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(name), "{err}");
    }

    let none: [&Path; 0] = [];
    assert!(matches!(
        GeoDb::open(&none, GeoOptions::default()),
        Err(GeoError::NoFiles)
    ));
}

#[test]
fn reload_swaps_on_success_and_keeps_the_old_db_on_failure() {
    let dir = scratch("reload");
    let db = GeoDb::open(&[city_db(&dir, 24)], GeoOptions::default()).unwrap();
    let london = db.lookup(ip("81.2.69.1")).unwrap();

    for bad in [dir.join("missing.mmdb"), {
        let p = dir.join("garbage.mmdb");
        std::fs::write(&p, b"garbage").unwrap();
        p
    }] {
        assert!(db.reload(&[&bad]).is_err());
        assert_eq!(db.lookup(ip("81.2.69.1")), Some(london));
        assert_eq!(db.lookup(ip("89.160.20.112")), None);
    }
    // Two files where the second is bad: nothing changes either.
    let [v4, _] = flat_dbs(&dir);
    assert!(db.reload(&[v4.clone(), dir.join("missing.mmdb")]).is_err());
    assert_eq!(db.paths(), vec![dir.join("city.mmdb")]);

    // A good reload takes effect at once, cached answers included.
    db.reload(&[&v4]).unwrap();
    assert_eq!(db.lookup(ip("81.2.69.1")), None);
    assert_eq!(
        db.lookup(ip("89.160.20.112")).unwrap().country.unwrap(),
        "SE"
    );
}

#[test]
fn broken_reference_databases_error_or_answer_none_never_panic() {
    let dir = reference_dir().join("geoip/broken");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("skipping: {} is absent", dir.display());
        return;
    };
    let probes = [
        "81.2.69.142",
        "89.160.20.112",
        "1.1.1.1",
        "::1",
        "2001:218::1",
        "::ffff:1.2.3.4",
    ];
    let mut seen = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        seen += 1;
        for verify in [false, true] {
            let options = GeoOptions {
                verify,
                ..GeoOptions::default()
            };
            match GeoDb::open(&[&path], options) {
                Err(err) => {
                    println!("{} (verify={verify}): {err}", path.display());
                    let name = path.file_name().unwrap().to_string_lossy();
                    assert!(err.to_string().contains(&*name), "{err}");
                }
                Ok(db) => {
                    let found: Vec<_> = probes.iter().map(|p| db.lookup(ip(p)).is_some()).collect();
                    println!(
                        "{} (verify={verify}) opened; found: {found:?}",
                        path.display()
                    );
                }
            }
        }
    }
    assert!(seen > 0, "no files in {}", dir.display());
}

#[test]
fn real_maxmind_test_database_places_known_addresses() {
    let path = reference_dir().join("geoip/GeoIP2-City-Test.mmdb");
    if !path.exists() {
        println!("skipping: {} is absent", path.display());
        return;
    }
    let db = GeoDb::open(
        &[&path],
        GeoOptions {
            verify: true,
            ..GeoOptions::default()
        },
    )
    .unwrap();
    // (address, lat, lon, country, continent): London, Linköping, Milton WA, Changchun.
    let cases = [
        ("81.2.69.142", 51.51, -0.09, "GB", Continent::Europe),
        ("89.160.20.112", 58.42, 15.62, "SE", Continent::Europe),
        (
            "216.160.83.56",
            47.25,
            -122.31,
            "US",
            Continent::NorthAmerica,
        ),
        ("175.16.199.0", 43.88, 125.32, "CN", Continent::Asia),
    ];
    for (addr, lat, lon, country, continent) in cases {
        for form in [addr.to_owned(), format!("::ffff:{addr}")] {
            let loc = db
                .lookup(ip(&form))
                .unwrap_or_else(|| panic!("{form} not found"));
            assert!(
                (loc.lat - lat).abs() < 0.1 && (loc.lon - lon).abs() < 0.1,
                "{form}: {loc:?}"
            );
            assert_eq!(loc.country.unwrap(), country, "{form}");
            assert_eq!(loc.continent, Some(continent), "{form}");
        }
    }
    assert_eq!(db.lookup(ip("127.0.0.1")), None);
}
