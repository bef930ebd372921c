A=first
