MKSHELL=rc
first second:V:
	echo -n
