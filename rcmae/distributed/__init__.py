"""Everything that needs Ray: joining a cluster, resource plans, the augmentation pipeline, Ray Train, Ray Tune
and batch inference. No module outside this package imports Ray."""
