"""What both emulators share: storage generated from the catalog, OData query options
compiled to SQL, keyset paging, ETags, bearer auth, the service-protection limiter,
fault injection and the control API."""
