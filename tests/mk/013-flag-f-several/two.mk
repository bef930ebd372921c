MKSHELL=rc
X=from two
second:V:
	echo second $X
