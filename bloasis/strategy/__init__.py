"""Tier 2 (sector analysis) and Tier 3 (per-profile and per-user strategies).

Pure domain code (no I/O): `sectors.analyze_sectors` -> `engine.build_profile_book` per profile
-> `book.strategy` for the profile, `users.derive_user_strategy` / `users.derive_many` for
users. Import the submodules directly: this package stays import-free so that readers of
`bloasis.strategy.types` (the wire, the server) do not pay for scipy and TA-Lib.
"""
