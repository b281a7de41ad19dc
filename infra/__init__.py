"""The engine's AWS stack as code (AWS CDK v2): `make infra` synthesizes and checks it offline."""
