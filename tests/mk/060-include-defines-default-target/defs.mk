MKSHELL=rc
X=in defs
Y=also
fromdefs:V:
	echo rule from defs.mk
