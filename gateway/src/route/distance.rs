//! Great-circle distance on (latitude, longitude) pairs, as the route stage holds them.

/// Haversine distance in km between two (latitude, longitude) points in
/// degrees: the region catalogue's formula, taking the tuples the fleet and
/// the route request carry. Non-finite input gives a non-finite result;
/// callers treat that as "unknown".
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    leasegate_fleet::region::haversine_km(a.0, a.1, b.0, b.1)
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
        assert!((d - std::f64::consts::PI * 6371.0088).abs() < 1e-6);
    }
}
