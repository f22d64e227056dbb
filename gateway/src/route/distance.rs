//! Great-circle distance, kept local so routing does not wait on the region catalogue.

/// Mean Earth radius (IUGG), in km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Haversine distance in km between two (latitude, longitude) points in
/// degrees. Out-of-range or non-finite input gives a non-finite or clamped
/// result rather than a panic; callers treat non-finite as "unknown".
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    // Rounding can push h a hair above 1 for antipodal points.
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_distances() {
        let frankfurt = (50.11, 8.68);
        let london = (51.51, -0.13);
        let new_york = (40.71, -74.01);
        let d = haversine_km(frankfurt, london);
        assert!((630.0..650.0).contains(&d), "{d}");
        let d = haversine_km(london, new_york);
        assert!((5560.0..5590.0).contains(&d), "{d}");
        assert_eq!(haversine_km(london, london), 0.0);
        let d = haversine_km((0.0, 0.0), (0.0, 180.0));
        assert!((d - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }
}
