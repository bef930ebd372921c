MKSHELL=rc
all:V:
	echo -n
