"""`python -m activity_pipeline.config` (`make tenants`): check the configuration; list the tenants."""

from activity_pipeline.config import main

raise SystemExit(main())
