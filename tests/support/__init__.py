"""Helpers shared by the test suite: throwaway servers, certificates and other fixtures."""
