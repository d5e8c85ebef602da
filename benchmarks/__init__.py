"""The gRPC load generator (``bonefrac bench``) and its reports. Not built yet: see the README's
roadmap."""
