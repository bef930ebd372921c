MKSHELL=rc
NPROC=2
x:V:
	echo x
