"""What this computer is and how it is protected: collectors, not probes.

``host`` (hardware and OS), ``antivirus`` and ``firewall`` each expose one function
that returns a report struct and never raises. Kept import-free so that importing one
collector does not load the others.
"""
